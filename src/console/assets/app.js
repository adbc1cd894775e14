// The console shell: session, navigation and hash routes (#/functions, #/new, #/f/NAME/TAB,
// #/nodes). A view is a function (main, params) that may return a cleanup (timers of live
// tails and auto-refresh stop when the view changes).
import { api, clear, h, loadSession, session } from './lib.js';
import { createView, listView } from './functions.js';
import { functionView } from './function.js';
import { nodesView } from './nodes.js';

const main = document.getElementById('main');
let cleanup = null;

const routes = [
  [/^#\/functions$/, () => listView],
  [/^#\/new$/, () => createView],
  [/^#\/f\/([^/?]+)(?:\/([a-z-]+))?(?:\?.*)?$/, (m) => (el) => functionView(el, decodeURIComponent(m[1]), m[2] || 'overview')],
  [/^#\/nodes$/, () => nodesView],
];

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* view already gone */ } cleanup = null; }
  const hash = location.hash || '#/functions';
  const section = hash.startsWith('#/nodes') ? 'nodes' : 'functions';
  document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === section));
  for (const [re, make] of routes) {
    const m = re.exec(hash);
    if (m) {
      clear(main);
      try { cleanup = (await make(m)(main)) || null; } catch (e) { main.append(h('div', { class: 'form-err' }, e.message)); }
      return;
    }
  }
  location.hash = '#/functions';
}

document.getElementById('signout').addEventListener('click', async () => {
  await api('DELETE', '/console/api/session', { raw: true });
  location.href = '/console/login';
});

loadSession().then(() => {
  document.getElementById('who').textContent = session.accessKeyId;
  window.addEventListener('hashchange', route);
  route();
});
