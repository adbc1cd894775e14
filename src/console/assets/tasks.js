// Async tasks: list by status and start time (newest first), open one for its history, stop it.
import { action, api, fmtTime, fn, h, table } from './lib.js';

const STATUSES = ['', 'Enqueued', 'Dequeued', 'Running', 'Retrying', 'Succeeded', 'Failed', 'Stopping', 'Stopped', 'Expired', 'Invalid'];
const ms = (local) => (local ? new Date(local).getTime() : undefined);

export async function tasksView(panel, name) {
  const status = h('select', { 'aria-label': 'status' }, STATUSES.map((s) => h('option', { value: s }, s || 'any status')));
  const from = h('input', { type: 'datetime-local', 'aria-label': 'started after' });
  const to = h('input', { type: 'datetime-local', 'aria-label': 'started before' });
  const list = h('div', { id: 'tasks' });
  const detail = h('div', {});
  let next = null;
  const load = async (more) => {
    const r = await api('GET', `${fn(name)}/async-tasks`, { query: {
      status: status.value, startedTimeBegin: ms(from.value), startedTimeEnd: ms(to.value), limit: 50, nextToken: more ? next : undefined,
    } });
    next = r.data.nextToken || null;
    const rows = (r.data.tasks || []).map((t) => h('tr', {},
      h('td', { class: 'mono' }, h('a', { href: '#', onclick: (e) => { e.preventDefault(); open(t.taskId); } }, t.taskId)),
      h('td', {}, badge(t.status)), h('td', {}, fmtTime(t.startedTime)), h('td', { class: 'opt' }, t.alreadyRetriedTimes ?? 0)));
    const tbl = table(['Task', 'Status', 'Started', h('th', { class: 'opt' }, 'Retries')], rows, 'No tasks match.');
    if (more) list.querySelector('tbody')?.append(...rows); else list.replaceChildren(tbl);
    moreBtn.hidden = !next;
  };
  const open = async (id) => {
    const t = (await api('GET', `${fn(name)}/async-tasks/${encodeURIComponent(id)}`)).data;
    const final = ['Succeeded', 'Failed', 'Stopped', 'Expired', 'Invalid'].includes(t.status);
    detail.replaceChildren(h('div', { class: 'card', id: 'task-detail' },
      h('div', { class: 'row' }, h('h2', {}, `Task ${t.taskId}`), h('span', { class: 'spacer' }),
        final ? null : action('Stop task', 'danger', async () => {
          await api('PUT', `${fn(name)}/async-tasks/${encodeURIComponent(id)}/stop`); await open(id); await load();
        })),
      h('dl', { class: 'kv' }, [['Status', badge(t.status)], ['Request id', t.requestId], ['Started', fmtTime(t.startedTime)],
        ['Ended', fmtTime(t.endTime)], ['Retries', t.alreadyRetriedTimes], ['Error', t.taskErrorMessage || '—'],
        ['Destination', t.destinationStatus || '—']].flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '')])),
      h('h3', {}, 'History'),
      table(['#', 'Status', 'Time', 'Detail'], (t.events || []).map((e) => h('tr', {},
        h('td', {}, e.eventId), h('td', {}, e.status), h('td', {}, fmtTime(e.timestamp)), h('td', {}, e.eventDetail)))),
      t.returnPayload ? [h('h3', {}, 'Result'), h('pre', {}, t.returnPayload)] : null));
    detail.scrollIntoView({ behavior: 'smooth' });
  };
  const moreBtn = h('button', { type: 'button', hidden: true, onclick: () => load(true) }, 'Load more');
  [status, from, to].forEach((e) => e.addEventListener('change', () => load()));
  panel.append(h('div', { class: 'card' },
    h('div', { class: 'row' }, status, h('span', { class: 'muted' }, 'started'), from, h('span', { class: 'muted' }, 'to'), to,
      h('button', { type: 'button', onclick: () => load() }, 'Refresh')),
    list, moreBtn), detail);
  await load();
  const wanted = location.hash.split('?')[1];
  if (wanted) await open(decodeURIComponent(wanted));
}

function badge(s) {
  const cls = s === 'Succeeded' ? 'badge good' : ['Failed', 'Expired', 'Invalid', 'Stopped'].includes(s) ? 'badge bad' : 'badge';
  return h('span', { class: cls }, s);
}
