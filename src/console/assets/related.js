// The function's satellites: versions and aliases (weights shown and editable), triggers,
// the async invoke config, and scaling (provision and concurrency configs).
import { action, api, clearErrors, field, fmtTime, fn, h, showError, table, toast } from './lib.js';
import { num } from './config.js';

/** A form whose submit runs `send` and reloads the tab; API errors go next to their field. */
function form(id, rows, label, send) {
  const f = h('form', { class: 'grid', novalidate: true, id }, h('div', { class: 'form-err full' }), rows,
    h('div', { class: 'full' }, h('button', { class: 'primary', type: 'submit' }, label)));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(f);
    try { await send(f); toast('Done'); window.dispatchEvent(new HashChangeEvent('hashchange')); } catch (e) { showError(f, e); }
  });
  return f;
}

const reload = () => window.dispatchEvent(new HashChangeEvent('hashchange'));

export async function versionsView(panel, name) {
  const [vs, as] = await Promise.all([
    api('GET', `${fn(name)}/versions`, { query: { limit: 100 } }),
    api('GET', `${fn(name)}/aliases`, { query: { limit: 100 } }),
  ]);
  const versions = vs.data.versions || [];
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Versions'),
    form('publish-form', field('Description', 'description', h('input', { name: 'description' })), 'Publish version',
      (f) => api('POST', `${fn(name)}/versions`, { json: { description: f.description.value } })),
    h('div', { id: 'versions' }, table(['Version', 'Description', 'Created', ''], versions.map((v) => h('tr', {},
      h('td', {}, v.versionId), h('td', {}, v.description), h('td', {}, fmtTime(v.createdTime)),
      h('td', {}, action('Delete', 'danger', async () => {
        if (!confirm(`Delete version ${v.versionId}?`)) return;
        await api('DELETE', `${fn(name)}/versions/${v.versionId}`); reload();
      })))), 'No versions published yet.'))));

  const aliases = as.data.aliases || [];
  const rows = aliases.map((a) => {
    const [[extra, weight] = ['', '']] = Object.entries(a.additionalVersionWeight || {});
    const ver = h('input', { value: a.versionId, 'aria-label': 'version', size: 4 });
    const ev = h('input', { value: extra, 'aria-label': 'additional version', size: 4 });
    const w = h('input', { value: weight, 'aria-label': 'weight', size: 5, type: 'number', step: '0.05', min: 0, max: 1 });
    const err = h('div', { class: 'field-err' });
    return h('tr', { 'data-alias': a.aliasName },
      h('td', {}, a.aliasName), h('td', {}, ver), h('td', {}, ev), h('td', {}, w, err),
      h('td', {}, action('Save', '', async () => {
        err.textContent = '';
        const additionalVersionWeight = ev.value.trim() ? { [ev.value.trim()]: Number(w.value) } : {};
        await api('PUT', `${fn(name)}/aliases/${encodeURIComponent(a.aliasName)}`, { json: { versionId: ver.value.trim(), additionalVersionWeight } });
        toast('Alias saved'); reload();
      }, (e) => { err.textContent = e.message; }), ' ',
      action('Delete', 'danger', async () => {
        if (!confirm(`Delete alias ${a.aliasName}?`)) return;
        await api('DELETE', `${fn(name)}/aliases/${encodeURIComponent(a.aliasName)}`); reload();
      }, (e) => { err.textContent = e.message; })));
  });
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Aliases'),
    h('div', { id: 'aliases' }, table(['Alias', 'Version', 'Additional version', 'Its weight (0–1)', ''], rows, 'No aliases yet.')),
    h('h3', {}, 'New alias'),
    form('alias-form', [
      field('Name', 'aliasName', h('input', { name: 'aliasName' })),
      field('Version', 'versionId', h('input', { name: 'versionId', value: versions[0]?.versionId || '' })),
      field('Additional version', 'additionalVersionWeight', h('input', { name: 'extra', placeholder: 'optional' })),
      field('Its weight', 'weight', h('input', { name: 'weight', type: 'number', step: '0.05', placeholder: '0.1' })),
    ], 'Create alias', (f) => api('POST', `${fn(name)}/aliases`, { json: {
      aliasName: f.aliasName.value.trim(), versionId: f.versionId.value.trim(),
      additionalVersionWeight: f.extra.value.trim() ? { [f.extra.value.trim()]: Number(f.weight.value) } : undefined,
    } }))));
}

const TRIGGER_EXAMPLES = {
  http: '{"authType": "anonymous", "methods": ["GET", "POST"]}',
  timer: '{"cronExpression": "@every 5m", "enable": true, "payload": "{}"}',
};

export async function triggersView(panel, name) {
  const r = await api('GET', `${fn(name)}/triggers`, { query: { limit: 100 } });
  const triggers = r.data.triggers || [];
  const type = h('select', { name: 'triggerType' }, Object.keys(TRIGGER_EXAMPLES).map((t) => h('option', { value: t }, t)));
  const cfg = h('textarea', { name: 'triggerConfig' }, TRIGGER_EXAMPLES.http);
  type.addEventListener('change', () => { cfg.value = TRIGGER_EXAMPLES[type.value]; });
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Triggers'),
    table(['Name', 'Type', 'Qualifier', 'Config', ''], triggers.map((t) => h('tr', {},
      h('td', {}, t.triggerName), h('td', {}, t.triggerType), h('td', {}, t.qualifier),
      h('td', { class: 'mono' }, t.triggerConfig, t.httpTrigger?.urlInternet ? h('div', {}, h('a', { href: t.httpTrigger.urlInternet }, t.httpTrigger.urlInternet)) : null),
      h('td', {}, action('Delete', 'danger', async () => {
        if (!confirm(`Delete trigger ${t.triggerName}?`)) return;
        await api('DELETE', `${fn(name)}/triggers/${encodeURIComponent(t.triggerName)}`); reload();
      })))), 'No triggers.')),
  h('div', { class: 'card' }, h('h2', {}, 'New trigger'),
    form('trigger-form', [
      field('Name', 'triggerName', h('input', { name: 'triggerName' })),
      field('Type', 'triggerType', type),
      field('Qualifier', 'qualifier', h('input', { name: 'qualifier', value: 'LATEST' })),
      field('Config (JSON)', 'triggerConfig', cfg),
    ], 'Create trigger', (f) => api('POST', `${fn(name)}/triggers`, { json: {
      triggerName: f.triggerName.value.trim(), triggerType: type.value, qualifier: f.qualifier.value.trim(), triggerConfig: cfg.value,
    } }))));
}

export async function asyncView(panel, name) {
  const r = await api('GET', `${fn(name)}/async-invoke-config`, { raw: true });
  const c = r.ok ? JSON.parse(r.data) : {};
  const dest = h('textarea', { name: 'destinationConfig' }, c.destinationConfig ? JSON.stringify(c.destinationConfig, null, 2) : '');
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Async invoke config'),
    h('p', { class: 'muted' }, r.ok ? 'Configured.' : 'Not configured: the defaults apply (3 retries, 24 h).'),
    form('async-form', [
      field('Max retries', 'maxAsyncRetryAttempts', h('input', { name: 'retries', type: 'number', value: c.maxAsyncRetryAttempts ?? '' })),
      field('Max event age (s)', 'maxAsyncEventAgeInSeconds', h('input', { name: 'age', type: 'number', value: c.maxAsyncEventAgeInSeconds ?? '' })),
      field('Destinations (JSON)', 'destinationConfig', dest, '{"onSuccess": {"destination": "acs:fc:::functions/other"}}'),
    ], 'Save', (f) => {
      let destinationConfig;
      if (dest.value.trim()) {
        try { destinationConfig = JSON.parse(dest.value); } catch (e) { throw new Error(`destinationConfig: not JSON: ${e.message}`); }
      }
      return api('PUT', `${fn(name)}/async-invoke-config`, { json: { maxAsyncRetryAttempts: num(f.retries.value), maxAsyncEventAgeInSeconds: num(f.age.value), destinationConfig } });
    }),
    r.ok ? action('Remove config', 'danger', async () => { await api('DELETE', `${fn(name)}/async-invoke-config`); reload(); }) : null));
}

export async function scalingView(panel, name) {
  const [p, c] = await Promise.all([
    api('GET', `${fn(name)}/provision-config`, { raw: true }),
    api('GET', `${fn(name)}/concurrency`, { raw: true }),
  ]);
  const prov = p.ok ? JSON.parse(p.data) : {};
  const conc = c.ok ? JSON.parse(c.data) : {};
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Provisioned instances'),
    h('p', { class: 'muted' }, p.ok ? `Target ${prov.target ?? 0}, current ${prov.current ?? 0}.` : 'None kept.'),
    form('provision-form', [
      field('Qualifier', 'qualifier', h('input', { name: 'qualifier', value: 'LATEST' })),
      field('Target', 'target', h('input', { name: 'target', type: 'number', value: prov.target ?? 1 })),
    ], 'Save', (f) => api('PUT', `${fn(name)}/provision-config`, { query: { qualifier: f.qualifier.value.trim() }, json: { target: num(f.target.value) } })),
    p.ok ? action('Remove', 'danger', async () => { await api('DELETE', `${fn(name)}/provision-config`); reload(); }) : null),
  h('div', { class: 'card' }, h('h2', {}, 'Reserved concurrency'),
    h('p', { class: 'muted' }, c.ok ? `Reserved: ${conc.reservedConcurrency}.` : 'Not limited.'),
    form('concurrency-form', field('Reserved concurrency', 'reservedConcurrency', h('input', { name: 'reserved', type: 'number', value: conc.reservedConcurrency ?? '' })),
      'Save', (f) => api('PUT', `${fn(name)}/concurrency`, { json: { reservedConcurrency: num(f.reserved.value) } })),
    c.ok ? action('Remove', 'danger', async () => { await api('DELETE', `${fn(name)}/concurrency`); reload(); }) : null));
}
