// A function's logs: by time range, request id and text, newest first, paged; live tail polls
// for lines newer than the newest shown.
import { api, fn, h } from './lib.js';

const ms = (local) => (local ? new Date(local).getTime() : undefined);

export async function logsView(panel, name) {
  const from = h('input', { type: 'datetime-local', 'aria-label': 'from' });
  const to = h('input', { type: 'datetime-local', 'aria-label': 'to' });
  const rid = h('input', { placeholder: 'request id', 'aria-label': 'request id', id: 'logs-rid' });
  const text = h('input', { placeholder: 'text (case-sensitive)', 'aria-label': 'text', id: 'logs-text' });
  const tail = h('input', { type: 'checkbox', id: 'logs-tail' });
  const lines = h('div', { id: 'log-lines' });
  const more = h('button', { type: 'button', hidden: true }, 'Older lines');
  let next = null, newest = 0, timer = null;
  const query = () => ({ startTime: ms(from.value), endTime: ms(to.value), requestId: rid.value.trim(), query: text.value, limit: 100 });
  const line = (l) => h('div', { class: `log-line ${l.stream}` }, h('span', { class: 't' }, l.time), l.requestId ? h('span', { class: 't' }, l.requestId) : null, l.message);
  const load = async () => {
    const r = await api('GET', `${fn(name)}/logs`, { query: query() });
    const ls = r.data.logs || [];
    next = r.data.nextToken || null;
    newest = ls.length ? ls[0].timestamp : newest;
    lines.replaceChildren(...(ls.length ? ls.map(line) : [h('p', { class: 'muted' }, 'No log lines match.')]));
    more.hidden = !next;
  };
  more.addEventListener('click', async () => {
    const r = await api('GET', `${fn(name)}/logs`, { query: { ...query(), nextToken: next } });
    lines.append(...(r.data.logs || []).map(line));
    next = r.data.nextToken || null;
    more.hidden = !next;
  });
  const poll = async () => {
    const r = await api('GET', `${fn(name)}/logs`, { query: { ...query(), startTime: newest ? newest + 1 : ms(from.value), endTime: undefined } }).catch(() => null);
    const ls = r ? r.data.logs || [] : [];
    if (ls.length) {
      if (!newest) lines.replaceChildren();
      newest = ls[0].timestamp;
      lines.prepend(...ls.map(line));
    }
  };
  tail.addEventListener('change', () => {
    clearInterval(timer);
    if (tail.checked) timer = setInterval(poll, 2000);
  });
  const search = h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); load(); } },
    from, to, rid, text, h('button', { class: 'primary', type: 'submit' }, 'Search'),
    h('label', { class: 'row', for: 'logs-tail' }, tail, 'Live tail'));
  panel.append(h('div', { class: 'card' }, search), h('div', { class: 'card' }, lines, more));
  await load();
  return () => clearInterval(timer);
}
