// One function: a tab bar, and the overview (configuration, edit, delete) and code tabs; the
// other tabs live in their own modules.
import { FC, action, api, clearErrors, field, fmtTime, fn, h, isSecretName, showError, toast } from './lib.js';
import { codePicker, envEditor, num } from './config.js';
import { testView } from './testing.js';
import { asyncView, scalingView, triggersView, versionsView } from './related.js';
import { tasksView } from './tasks.js';
import { logsView } from './logs.js';
import { monitorView } from './charts.js';

const TABS = [
  ['overview', 'Overview', overview], ['code', 'Code', codeTab], ['test', 'Test', testView],
  ['versions', 'Versions & aliases', versionsView], ['triggers', 'Triggers', triggersView],
  ['async', 'Async config', asyncView], ['scaling', 'Scaling', scalingView], ['tasks', 'Async tasks', tasksView],
  ['logs', 'Logs', logsView], ['monitoring', 'Monitoring', monitorView],
];

export async function functionView(main, name, tab) {
  const f = (await api('GET', fn(name))).data;
  const href = (t) => `#/f/${encodeURIComponent(name)}/${t}`;
  const panel = h('div', {});
  main.append(
    h('div', { class: 'row' }, h('a', { href: '#/functions' }, 'Functions'), h('span', { class: 'muted' }, '/'),
      h('h1', { style: 'margin:0' }, name), h('span', { class: 'badge' }, f.runtime)),
    h('nav', { class: 'tabs' }, TABS.map(([id, label]) => h('a', { href: href(id), class: id === tab ? 'active' : null, 'data-tab': id }, label))),
    panel);
  const view = (TABS.find(([id]) => id === tab) || TABS[0])[2];
  return view(panel, name, f);
}

function overview(panel, name, f) {
  const env = f.environmentVariables || {};
  const shown = Object.entries(env).map(([k, v]) => [k, isSecretName(k) ? '•••••• (hidden)' : v]);
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Configuration'),
    h('dl', { class: 'kv' },
      [['Runtime', f.runtime], ['Handler', f.handler], ['Memory', `${f.memorySize} MB`], ['Timeout', `${f.timeout} s`],
        ['Description', f.description || '—'], ['Code checksum', f.codeChecksum], ['Code size', `${f.codeSize} bytes`],
        ['Modified', fmtTime(f.lastModifiedTime)], ['Function id', f.functionId]]
        .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '')])),
    h('h3', {}, 'Environment variables'),
    shown.length ? h('dl', { class: 'kv mono', id: 'env-shown' }, shown.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])) : h('p', { class: 'muted' }, 'None.')));

  const env2 = envEditor(env);
  const form = h('form', { class: 'grid', id: 'edit-form', novalidate: true },
    h('div', { class: 'form-err full' }),
    field('Handler', 'handler', h('input', { name: 'handler', value: f.handler || '' })),
    field('Memory (MB)', 'memorySize', h('input', { name: 'memorySize', type: 'number', value: f.memorySize })),
    field('Timeout (s)', 'timeout', h('input', { name: 'timeout', type: 'number', value: f.timeout })),
    field('Description', 'description', h('input', { name: 'description', value: f.description || '' })),
    field('Environment', 'environmentVariables', env2),
    h('div', { class: 'full' }, h('button', { class: 'primary', type: 'submit', id: 'save-config' }, 'Save')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    try {
      await api('PUT', fn(name), { json: {
        handler: form.handler.value.trim(), memorySize: num(form.memorySize.value), timeout: num(form.timeout.value),
        description: form.description.value, environmentVariables: env2.read(),
      } });
      toast('Saved');
      location.reload();
    } catch (e) { showError(form, e); }
  });
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Edit configuration'), form));

  const confirmName = h('input', { placeholder: `type ${name} to confirm`, id: 'delete-confirm', 'aria-label': 'confirm name' });
  const err = h('div', { class: 'form-err' });
  const del = action('Delete function', 'danger', async () => {
    if (confirmName.value !== name) { err.textContent = `Type the function's name (${name}) to delete it.`; return; }
    await api('DELETE', fn(name));
    location.hash = '#/functions';
  }, (e) => { err.textContent = e.message; });
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Delete'),
    h('p', { class: 'muted' }, 'Deletes the function. Delete its versions, aliases and triggers first.'),
    err, h('div', { class: 'row' }, confirmName, del)));
}

function codeTab(panel, name, f) {
  if (f.runtime === 'custom-container') {
    const image = h('input', { name: 'image', value: f.customContainerConfig?.image || '' });
    const form = h('form', { class: 'grid', novalidate: true }, h('div', { class: 'form-err full' }),
      field('Image', 'customContainerConfig.image', image),
      h('div', { class: 'full' }, h('button', { class: 'primary', type: 'submit' }, 'Save image')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try { await api('PUT', fn(name), { json: { customContainerConfig: { ...f.customContainerConfig, image: image.value.trim() } } }); toast('Saved'); } catch (e) { showError(form, e); }
    });
    panel.append(h('div', { class: 'card' }, h('h2', {}, 'Container image'), form));
    return;
  }
  const picker = codePicker();
  const form = h('form', { class: 'grid', novalidate: true, id: 'code-form' }, h('div', { class: 'form-err full' }),
    field('New code', 'code', picker),
    h('div', { class: 'full' }, h('button', { class: 'primary', type: 'submit' }, 'Replace code')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    try {
      const zip = await picker.read();
      if (!zip) { showError(form, new Error('code: choose a zip file or a folder')); return; }
      const r = await api('PUT', fn(name), { json: { code: { zipFile: zip } } });
      toast(`Code replaced (checksum ${r.data.codeChecksum})`);
    } catch (e) { showError(form, e); }
  });
  const link = h('span', {});
  const get = action('Get download link', '', async () => {
    const r = await api('GET', `${fn(name)}/code`);
    link.replaceChildren(h('a', { href: r.data.url }, 'Download the current zip'));
  });
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Code'),
    h('p', {}, `Checksum ${f.codeChecksum}, ${f.codeSize} bytes.`), h('div', { class: 'row' }, get, link)),
  h('div', { class: 'card' }, h('h2', {}, 'Replace code'), form));
}

export { FC };
