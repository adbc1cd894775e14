// Form parts shared by "create" and "edit": runtimes, the environment editor (secret values
// are never put in the page), the code source picker (zip, folder, container image).
import { base64, h, isSecretName } from './lib.js';
import { zipFolder } from './zip.js';

export const RUNTIMES = ['python3.10', 'python3.9', 'python3.12', 'python3', 'nodejs20', 'nodejs18', 'custom.debian12', 'custom-container'];

export function runtimeSelect(value) {
  return h('select', { name: 'runtime' }, RUNTIMES.map((r) => h('option', { value: r, selected: r === value }, r)));
}

/**
 * Environment variables editor. `current` is the function's map; values whose name looks
 * secret are not prefilled (an empty box keeps the stored value). read() gives the map to send.
 */
export function envEditor(current = {}) {
  const rows = h('div', {});
  const add = (k = '', v = '', hidden = false) => {
    const key = h('input', { placeholder: 'NAME', value: k, 'aria-label': 'variable name', class: 'env-key' });
    const val = h('input', {
      placeholder: hidden ? 'unchanged (hidden)' : 'value', value: hidden ? '' : v,
      type: hidden || isSecretName(k) ? 'password' : 'text', 'aria-label': 'variable value', class: 'env-value',
      autocomplete: 'off',
    });
    key.addEventListener('input', () => { val.type = isSecretName(key.value) ? 'password' : 'text'; });
    const row = h('div', { class: 'env-row' }, key, val,
      h('button', { type: 'button', title: 'remove', onclick: () => row.remove() }, '×'));
    row.dataset.hidden = hidden ? k : '';
    rows.append(row);
  };
  for (const [k, v] of Object.entries(current)) add(k, v, isSecretName(k));
  const el = h('div', {}, rows, h('button', { type: 'button', class: 'env-add', onclick: () => add() }, '+ variable'));
  el.read = () => {
    const out = {};
    for (const row of rows.children) {
      const [k, v] = row.querySelectorAll('input');
      const name = k.value.trim();
      if (!name) continue;
      // A hidden secret left empty keeps its stored value.
      out[name] = v.value === '' && row.dataset.hidden === name ? current[name] : v.value;
    }
    return out;
  };
  return el;
}

/** Code source: a zip file or a folder's files. read() → base64 zip or null (unchanged). */
export function codePicker() {
  const zip = h('input', { type: 'file', accept: '.zip,application/zip', name: 'zipFile' });
  const folder = h('input', { type: 'file', name: 'folder', webkitdirectory: true, multiple: true });
  const el = h('div', {},
    h('div', { class: 'row' }, h('span', { class: 'muted' }, 'Zip file'), zip),
    h('div', { class: 'row' }, h('span', { class: 'muted' }, 'or a folder'), folder));
  el.read = async () => {
    if (zip.files.length) return base64(new Uint8Array(await zip.files[0].arrayBuffer()));
    if (folder.files.length) return base64(await zipFolder(folder.files));
    return null;
  };
  return el;
}

export const num = (v) => (v === '' || v === undefined ? undefined : Number(v));
