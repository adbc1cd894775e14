// The sign-in page: trade an access key pair for a session cookie, then open the console.
const form = document.getElementById('login');
const err = document.getElementById('login-err');
form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  err.textContent = '';
  const body = { accessKeyId: form.accessKeyId.value.trim(), accessKeySecret: form.accessKeySecret.value };
  const r = await fetch('/console/api/session', {
    method: 'POST', credentials: 'same-origin',
    headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  if (r.ok) { location.href = '/console/'; return; }
  let msg = `sign-in failed (${r.status})`;
  try { msg = (await r.json()).Message || msg; } catch { /* not JSON */ }
  err.textContent = msg;
  form.accessKeySecret.value = '';
});
