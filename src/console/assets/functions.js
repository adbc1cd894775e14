// Functions: the list (search by name prefix, pages of 20) and the create form.
import { FC, api, clearErrors, field, fmtTime, h, showError, table } from './lib.js';
import { codePicker, envEditor, num, runtimeSelect } from './config.js';

export async function listView(main) {
  const search = h('input', { type: 'search', placeholder: 'Search by name prefix', 'aria-label': 'search', id: 'fn-search' });
  const body = h('div', {});
  const pager = h('div', { class: 'row' });
  const tokens = [null]; // page start tokens, for "previous"
  let page = 0;
  const load = async () => {
    const r = await api('GET', `${FC}/functions`, { query: { prefix: search.value.trim(), limit: 20, nextToken: tokens[page] } });
    const fns = r.data.functions || [];
    tokens[page + 1] = r.data.nextToken || null;
    body.replaceChildren(table(['Name', 'Runtime', h('th', { class: 'opt' }, 'Memory'), h('th', { class: 'opt' }, 'Timeout'), 'Modified'],
      fns.map((f) => h('tr', {},
        h('td', {}, h('a', { href: `#/f/${encodeURIComponent(f.functionName)}` }, f.functionName)),
        h('td', {}, f.runtime),
        h('td', { class: 'opt' }, `${f.memorySize} MB`),
        h('td', { class: 'opt' }, `${f.timeout} s`),
        h('td', {}, fmtTime(f.lastModifiedTime)))),
      search.value ? 'No function matches.' : 'No functions yet: create one.'));
    pager.replaceChildren(
      h('button', { type: 'button', disabled: page === 0, onclick: () => { page--; load(); } }, '‹ Previous'),
      h('span', { class: 'muted' }, `Page ${page + 1}`),
      h('button', { type: 'button', disabled: !tokens[page + 1], onclick: () => { page++; load(); } }, 'Next ›'));
  };
  let timer;
  search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(() => { page = 0; tokens.length = 1; load(); }, 250); });
  main.append(
    h('div', { class: 'row' }, h('h1', {}, 'Functions'), h('span', { class: 'spacer' }),
      h('a', { class: 'btn', href: '#/new', id: 'new-function' }, '+ Create function')),
    h('div', { class: 'card' }, search, body, pager));
  await load();
  return () => clearTimeout(timer);
}

export async function createView(main) {
  const runtime = runtimeSelect('python3.10');
  const env = envEditor({});
  const code = codePicker();
  const image = h('input', { name: 'image', placeholder: 'registry/name:tag' });
  const port = h('input', { name: 'port', type: 'number', placeholder: '9000' });
  const codeRow = field('Code', 'code', code, 'a .zip, or pick a folder: its files are zipped here');
  const containerRows = [...field('Image', 'customContainerConfig.image', image), ...field('Port', 'customContainerConfig.port', port)];
  const form = h('form', { class: 'grid', id: 'create-form', novalidate: true },
    h('div', { class: 'form-err full' }),
    field('Name', 'functionName', h('input', { name: 'functionName', required: true, autocomplete: 'off' })),
    field('Runtime', 'runtime', runtime),
    field('Handler', 'handler', h('input', { name: 'handler', value: 'index.handler' }), 'file.function, e.g. index.handler'),
    field('Memory (MB)', 'memorySize', h('input', { name: 'memorySize', type: 'number', value: 128 })),
    field('Timeout (s)', 'timeout', h('input', { name: 'timeout', type: 'number', value: 10 })),
    field('Description', 'description', h('input', { name: 'description' })),
    field('Environment', 'environmentVariables', env),
    codeRow, containerRows,
    h('div', { class: 'full', 'data-field': 'customContainerConfig' }, h('div', { class: 'field-err' })),
    h('div', { class: 'full row' }, h('button', { class: 'primary', type: 'submit', id: 'create-submit' }, 'Create'),
      h('a', { href: '#/functions' }, 'Cancel')));
  const sync = () => {
    const isContainer = runtime.value === 'custom-container';
    containerRows.forEach((e) => { e.hidden = !isContainer; });
    codeRow.forEach((e) => { e.hidden = isContainer; });
  };
  runtime.addEventListener('change', sync);
  sync();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const submit = form.querySelector('#create-submit');
    submit.disabled = true;
    try {
      const body = {
        functionName: form.functionName.value.trim(), runtime: runtime.value, handler: form.handler.value.trim(),
        memorySize: num(form.memorySize.value), timeout: num(form.timeout.value),
        description: form.description.value || undefined, environmentVariables: env.read(),
      };
      if (runtime.value === 'custom-container') {
        body.customContainerConfig = { image: image.value.trim(), port: num(port.value) };
      } else {
        const zip = await code.read();
        body.code = zip ? { zipFile: zip } : undefined;
      }
      await api('POST', `${FC}/functions`, { json: body });
      location.hash = `#/f/${encodeURIComponent(body.functionName)}`;
    } catch (e) {
      showError(form, e);
    } finally {
      submit.disabled = false;
    }
  });
  main.append(h('h1', {}, 'Create function'), h('div', { class: 'card' }, form));
}
