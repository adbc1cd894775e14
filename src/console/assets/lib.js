// Shared helpers: DOM building (text only, never innerHTML, so nothing from the API is
// interpreted as markup), the API client (session cookie + CSRF header), form errors.

export const FC = '/2023-03-30';
export const session = { csrf: null, accessKeyId: null };

/** h('div', {class: 'x', onclick: f}, 'text', child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An API error: the FC error body's code and message, as the API wrote them. */
export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status; this.code = code; this.requestId = requestId;
  }
}

export async function loadSession() {
  const r = await fetch('/console/api/session', { credentials: 'same-origin' });
  if (r.status === 401) { location.href = '/console/login'; throw new ApiError(401, 'NotSignedIn', 'sign in'); }
  const s = await r.json();
  session.csrf = s.csrfToken; session.accessKeyId = s.accessKeyId;
  return s;
}

/**
 * Call the API with the session. opts: {query, json, body, headers, raw}. Resolves to
 * {status, headers, data} (data: parsed JSON, or text with raw); rejects with ApiError.
 */
export async function api(method, path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (method !== 'GET' && method !== 'HEAD') headers['x-nubis-csrf'] = session.csrf;
  let body = opts.body;
  if (opts.json !== undefined) { headers['content-type'] = 'application/json'; body = JSON.stringify(opts.json); }
  const q = opts.query ? '?' + new URLSearchParams(Object.entries(opts.query).filter(([, v]) => v !== undefined && v !== null && v !== '')) : '';
  const r = await fetch(path + q, { method, headers, body, credentials: 'same-origin' });
  const text = await r.text();
  if (r.status === 401) { location.href = '/console/login'; }
  if (!r.ok && !opts.raw) {
    let e = {};
    try { e = JSON.parse(text); } catch { /* not JSON */ }
    throw new ApiError(r.status, e.Code || String(r.status), e.Message || text || r.statusText, e.RequestId);
  }
  let data = text;
  if (!opts.raw) { try { data = text ? JSON.parse(text) : null; } catch { data = text; } }
  return { status: r.status, headers: r.headers, data, ok: r.ok };
}

export const fn = (name) => `${FC}/functions/${encodeURIComponent(name)}`;

/**
 * Show an API error in a form: next to the field it names ("memorySize: must be ..." goes
 * under the element with data-field="memorySize"), else at the top of the form.
 */
export function showError(form, err) {
  clearErrors(form);
  const msg = err instanceof ApiError ? err.message : String(err.message || err);
  const m = /^([A-Za-z][\w.]*)(\[[^\]]*\])?: /.exec(msg);
  let slot = null;
  if (m) {
    // The longest data-field that the error's field path starts with.
    const path = m[1];
    const fields = [...form.querySelectorAll('[data-field]')]
      .filter((f) => path === f.dataset.field || path.startsWith(f.dataset.field + '.'))
      .sort((a, b) => b.dataset.field.length - a.dataset.field.length);
    if (fields.length) {
      slot = fields[0].querySelector('.field-err');
      fields[0].querySelectorAll('input,select,textarea').forEach((i) => i.classList.add('invalid'));
    }
  }
  if (!slot) slot = form.querySelector('.form-err');
  if (slot) slot.textContent = msg;
}

export function clearErrors(form) {
  form.querySelectorAll('.field-err, .form-err').forEach((e) => { e.textContent = ''; });
  form.querySelectorAll('.invalid').forEach((e) => e.classList.remove('invalid'));
}

/** A labelled form row: <label> + a cell holding the control and its error slot. */
export function field(label, name, control, hint) {
  const id = 'f-' + name.replace(/\W/g, '-');
  if (!control.id) control.id = id;
  return [
    h('label', { for: control.id }, label),
    h('div', { 'data-field': name }, control, hint ? h('div', { class: 'hint' }, hint) : null, h('div', { class: 'field-err' })),
  ];
}

export function toast(text) {
  const t = h('div', { class: 'toast', role: 'status' }, text);
  document.body.append(t);
  setTimeout(() => t.remove(), 2500);
}

export function fmtTime(v) {
  if (v === undefined || v === null || v === '') return '';
  const d = typeof v === 'number' ? new Date(v) : new Date(v);
  return isNaN(d) ? String(v) : d.toLocaleString();
}

export function base64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function decodeBase64Text(b64) {
  try { return new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))); } catch { return ''; }
}

/** Environment variables whose value is a secret by its name: never shown, never prefilled. */
export const isSecretName = (name) => /secret|password|passwd|token|key|credential|private/i.test(name);

/** A button that disables itself while its async action runs; errors go to onError. */
export function action(label, cls, run, onError) {
  const b = h('button', { type: 'button', class: cls }, label);
  b.addEventListener('click', async () => {
    b.disabled = true;
    try { await run(); } catch (e) { if (onError) onError(e); else alert(e.message); } finally { b.disabled = false; }
  });
  return b;
}

export function table(headers, rows, empty = 'Nothing here yet.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, headers.map((x) => (typeof x === 'string' ? h('th', {}, x) : x)))),
    h('tbody', {}, rows)));
}
