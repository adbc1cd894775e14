// Test a function: a JSON event, sync or async, and what came back: status, body, duration,
// request id, and that invocation's log lines (the tail the API returns, then the stored lines).
import { FC, api, clearErrors, decodeBase64Text, field, fn, h, showError } from './lib.js';

export function testView(panel, name) {
  const event = h('textarea', { name: 'event', id: 'event', spellcheck: 'false' }, '{\n  "key": "value"\n}');
  const type = h('select', { name: 'type', id: 'invoke-type' }, h('option', { value: 'Sync' }, 'Sync'), h('option', { value: 'Async' }, 'Async'));
  const qualifier = h('input', { name: 'qualifier', value: 'LATEST' });
  const out = h('div', { id: 'invoke-result' });
  const form = h('form', { class: 'grid', novalidate: true, id: 'test-form' },
    h('div', { class: 'form-err full' }),
    field('Event (JSON)', 'event', event),
    field('Invocation', 'invocationType', type),
    field('Qualifier', 'qualifier', qualifier, 'LATEST, a version id or an alias'),
    h('div', { class: 'full' }, h('button', { class: 'primary', type: 'submit', id: 'invoke' }, 'Invoke')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    try { JSON.parse(event.value); } catch (e) { showError(form, new Error(`event: not JSON: ${e.message}`)); return; }
    const btn = form.querySelector('#invoke');
    btn.disabled = true;
    out.replaceChildren(h('p', { class: 'muted' }, 'Invoking…'));
    try {
      const r = await api('POST', `${fn(name)}/invocations`, {
        raw: true, body: event.value, query: { qualifier: qualifier.value.trim() === 'LATEST' ? '' : qualifier.value.trim() },
        headers: { 'content-type': 'application/json', 'x-fc-invocation-type': type.value, 'x-fc-log-type': type.value === 'Sync' ? 'Tail' : 'None' },
      });
      showResult(out, name, r, type.value);
    } catch (e) { showError(form, e); out.replaceChildren(); } finally { btn.disabled = false; }
  });
  panel.append(h('div', { class: 'card' }, h('h2', {}, 'Test the function'), form), out);
}

function showResult(out, name, r, type) {
  const rid = r.headers.get('x-fc-request-id');
  const err = r.headers.get('x-fc-error-type');
  const tail = r.headers.get('x-fc-log-result');
  const logs = h('div', { id: 'invoke-logs' }, tail ? h('pre', {}, decodeBase64Text(tail)) : h('p', { class: 'muted' }, 'Waiting for the logs…'));
  const taskId = r.headers.get('x-fc-async-task-id');
  out.replaceChildren(h('div', { class: 'card' },
    h('h2', {}, 'Result'),
    h('dl', { class: 'kv' },
      h('dt', {}, 'Status'), h('dd', { id: 'invoke-status' }, h('span', { class: r.ok && !err ? 'badge good' : 'badge bad' }, `${r.status}${err ? ' ' + err : ''}`)),
      h('dt', {}, 'Request id'), h('dd', { class: 'mono', id: 'invoke-rid' }, rid || ''),
      type === 'Sync' ? [h('dt', {}, 'Duration'), h('dd', { id: 'invoke-duration' }, `${r.headers.get('x-fc-invocation-duration') || '?'} ms`)] : null,
      taskId ? [h('dt', {}, 'Async task'), h('dd', {}, h('a', { href: `#/f/${encodeURIComponent(name)}/tasks?${taskId}` }, taskId))] : null),
    type === 'Sync' ? [h('h3', {}, 'Response'), h('pre', { id: 'invoke-body' }, prettyJson(r.data))] : null,
    h('h3', {}, 'Logs of this invocation'), logs));
  if (rid) pollLogs(logs, name, rid);
}

function prettyJson(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

/** The stored lines of one request (they arrive a moment after the answer): poll for ~20 s. */
async function pollLogs(el, name, rid) {
  for (let i = 0; i < 40 && el.isConnected; i++) {
    const r = await api('GET', `${fn(name)}/logs`, { query: { requestId: rid, limit: 200 } }).catch(() => null);
    const lines = r ? (r.data.logs || []).slice().reverse() : [];
    if (lines.some((l) => l.stream === 'platform')) {
      el.replaceChildren(h('pre', { class: 'invoke-log' }, lines.map((l) => `${l.time} [${l.stream}] ${l.message}\n`).join('')));
      return;
    }
    await new Promise((ok) => setTimeout(ok, 500));
  }
}

export { FC };
