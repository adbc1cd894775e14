// Nodes: the cluster's role, each node's capacity, usage and instances, cordon/uncordon/drain,
// and charts of capacity and usage over time (this controller's samples).
import { action, api, h, table, toast } from './lib.js';
import { RANGES, lineChart, resizer } from './charts.js';

const ADMIN = '/nubis/admin/v1';

export async function nodesView(main) {
  const top = h('div', {});
  const grid = h('div', { class: 'charts', id: 'cluster-charts' });
  const range = h('select', { 'aria-label': 'range' }, RANGES.slice(0, 2).map(([l, m]) => h('option', { value: m, selected: m === 15 }, `last ${l}`)));
  let unresize = () => {};
  const load = async () => {
    const [cluster, nodes] = await Promise.all([api('GET', `${ADMIN}/cluster`), api('GET', `${ADMIN}/nodes`)]);
    const c = cluster.data;
    top.replaceChildren(
      h('p', {}, 'Role: ', h('span', { class: 'badge' }, c.role), c.leader ? ` · leader ${c.leader}` : '', c.role !== 'single' ? ` · epoch ${c.epoch}` : ''),
      ...(nodes.data.nodes || []).map(nodeCard));
  };
  const nodeCard = (n) => {
    const act = (verb, cls) => action(verb[0].toUpperCase() + verb.slice(1), cls, async () => {
      if (verb === 'drain' && !confirm(`Drain ${n.nodeId}? Its instances finish their calls and stop.`)) return;
      await api('POST', `${ADMIN}/nodes/${encodeURIComponent(n.nodeId)}/${verb}`);
      toast(`${n.nodeId}: ${verb}ed`); await load();
    });
    return h('div', { class: 'card', 'data-node': n.nodeId },
      h('div', { class: 'row' }, h('h2', { style: 'margin:0' }, n.nodeId), n.cordoned ? h('span', { class: 'badge bad' }, 'cordoned') : h('span', { class: 'badge good' }, 'schedulable'),
        h('span', { class: 'spacer' }), n.cordoned ? act('uncordon', '') : act('cordon', ''), act('drain', 'danger')),
      h('p', { class: 'muted' }, `${n.address || 'this process'} · memory ${n.memoryUsedMb} / ${n.memoryTotalMb} MB · CPU ${n.cpuUsed.toFixed(2)} / ${n.cpuTotal}`),
      table(['Instance', 'Function', 'Version', 'State', 'In flight'], n.instances.map((i) => h('tr', {},
        h('td', { class: 'mono' }, i.instanceId), h('td', {}, h('a', { href: `#/f/${encodeURIComponent(i.functionName)}` }, i.functionName)),
        h('td', {}, i.version ?? 'LATEST'), h('td', {}, i.state), h('td', {}, i.inflight))), 'No instances.'));
  };
  const draw = async () => {
    const from = Date.now() - Number(range.value) * 60_000;
    const samples = (await api('GET', '/console/api/cluster/series', { query: { from } })).data.samples || [];
    const t = samples.map((s) => Math.floor(s.t / 1000));
    const sum = (f) => samples.map((s) => s.nodes.reduce((a, n) => a + f(n), 0));
    grid.replaceChildren();
    unresize();
    const charts = [
      lineChart(grid, 'Memory (MB)', t, [{ label: 'capacity', values: sum((n) => n.memoryTotalMb) }, { label: 'placed', values: sum((n) => n.memoryUsedMb) }]),
      lineChart(grid, 'CPU', t, [{ label: 'capacity', values: sum((n) => n.cpuTotal) }, { label: 'placed', values: sum((n) => n.cpuUsed) }]),
      lineChart(grid, 'Instances', t, [{ label: 'instances', values: sum((n) => n.instances) }], { fill: true }),
      lineChart(grid, 'Nodes', t, [{ label: 'nodes', values: samples.map((s) => s.nodes.length) }]),
    ];
    unresize = resizer(grid, charts);
  };
  range.addEventListener('change', draw);
  main.append(h('h1', {}, 'Nodes'), top, h('div', { class: 'row' }, h('h2', {}, 'Cluster over time'), range), grid);
  await Promise.all([load(), draw()]);
  const timer = setInterval(() => { if (document.visibilityState === 'visible') { load(); draw(); } }, 10_000);
  return () => { clearInterval(timer); unresize(); };
}
