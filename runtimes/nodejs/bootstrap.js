'use strict';
// Nubis nodejs runtime: serves the instance contract (docs/contract.md) for `module.func` handlers.
const fs = require('fs');
const http = require('http');
const path = require('path');
const util = require('util');
const { pathToFileURL } = require('url');

const CODE_DIR = process.env.FC_FUNC_CODE_PATH || '/code';
const handlers = new Map(); // handler spec -> Promise<function>
let initRun = null; // shared by concurrent /initialize calls; reset on failure so the next call retries
// A warm-pool cell starts with no function: it waits for the agent's one specialize call, which
// brings the function's environment (its code is linked into /code by then). The token proves
// the caller is the agent; it is removed from the environment before any user code runs.
const cellToken = process.env.NUBIS_CELL_TOKEN || '';
delete process.env.NUBIS_CELL_TOKEN;
let specialized = !cellToken;

const say = (line) => process.stdout.write(line + '\n'); // synchronous on Linux pipes, so ordered with user output

function makeLogger(requestId) {
  const at = (level) => (...args) =>
    process.stdout.write(`${new Date().toISOString()} ${requestId} [${level}] ${util.format(...args)}\n`);
  return { debug: at('DEBUG'), info: at('INFO'), log: at('INFO'), warn: at('WARN'), error: at('ERROR') };
}

function makeContext(h) {
  const env = process.env;
  const get = (header, name) => h[header] || (name && env[name]) || '';
  const num = (v) => Number.parseInt(v, 10) || 0;
  const qualifier = get('x-fc-qualifier');
  const versionId = get('x-fc-version-id');
  const requestId = get('x-fc-request-id');
  return {
    requestId,
    credentials: {
      accessKeyId: get('x-fc-access-key-id', 'ALIBABA_CLOUD_ACCESS_KEY_ID'),
      accessKeySecret: get('x-fc-access-key-secret', 'ALIBABA_CLOUD_ACCESS_KEY_SECRET'),
      securityToken: get('x-fc-security-token', 'ALIBABA_CLOUD_SECURITY_TOKEN'),
    },
    function: {
      name: get('x-fc-function-name', 'FC_FUNCTION_NAME'),
      handler: env.FC_FUNCTION_HANDLER || get('x-fc-function-handler'),
      memory: num(get('x-fc-function-memory', 'FC_FUNCTION_MEMORY_SIZE')),
      timeout: num(get('x-fc-function-timeout', 'FC_TIMEOUT')),
      initializer: env.FC_INITIALIZER_HANDLER || get('x-fc-function-initializer'),
      initializationTimeout: num(get('x-fc-initialization-timeout', 'FC_INITIALIZATION_TIMEOUT')),
      qualifier,
      versionId,
    },
    // FC 2.0 leftovers that ported code still reads.
    service: { name: '', logProject: '', logStore: '', qualifier, versionId },
    region: get('x-fc-region', 'FC_REGION'),
    accountId: get('x-fc-account-id', 'FC_ACCOUNT_ID'),
    logger: makeLogger(requestId),
  };
}

function resolveFile(base) {
  try {
    return require.resolve(base);
  } catch {
    return fs.existsSync(base + '.mjs') ? base + '.mjs' : null;
  }
}

async function loadModule(name) {
  const file = resolveFile(path.resolve(CODE_DIR, name));
  if (!file) throw new Error(`Cannot find module '${name}' in ${CODE_DIR}`);
  if (file.endsWith('.mjs')) return import(pathToFileURL(file).href);
  try {
    return require(file);
  } catch (e) {
    // A .js file under "type": "module" can only be loaded as ESM.
    if (e && e.code === 'ERR_REQUIRE_ESM') return import(pathToFileURL(file).href);
    throw e;
  }
}

async function loadHandler(spec) {
  const dot = spec.lastIndexOf('.');
  if (dot <= 0 || dot === spec.length - 1) throw new Error(`Invalid handler '${spec}': expected module.function`);
  const modName = spec.slice(0, dot);
  const fnName = spec.slice(dot + 1);
  const mod = await loadModule(modName);
  const fn = mod[fnName] ?? (mod.default && mod.default[fnName]);
  if (typeof fn !== 'function') throw new Error(`Handler '${fnName}' is missing or not a function in module '${modName}'`);
  return fn;
}

function resolveHandler(spec) {
  let p = handlers.get(spec);
  if (!p) {
    p = loadHandler(spec);
    handlers.set(spec, p);
    p.catch(() => handlers.delete(spec)); // a fixed module is loaded again on the next call
  }
  return p;
}

// A function declaring more parameters than we pass wants a callback (err, result); otherwise
// its return value (or the Promise's) is the result.
function callUser(fn, args) {
  return new Promise((resolve, reject) => {
    const wantsCallback = fn.length > args.length;
    const ret = wantsCallback ? fn(...args, (err, result) => (err ? reject(err) : resolve(result))) : fn(...args);
    if (!wantsCallback || (ret && typeof ret.then === 'function')) Promise.resolve(ret).then(resolve, reject);
  });
}

function toBuffer(result) {
  if (result === undefined || result === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(result)) return result;
  if (typeof result === 'string') return Buffer.from(result, 'utf8');
  if (ArrayBuffer.isView(result)) return Buffer.from(result.buffer, result.byteOffset, result.byteLength);
  if (result instanceof ArrayBuffer) return Buffer.from(result);
  return Buffer.from(JSON.stringify(result) ?? String(result), 'utf8');
}

// Bootstrap, node-internal and Promise-executor frames are noise to the user.
const isUserFrame = (l) => l.startsWith('at ') && !l.includes(__filename) && !l.includes('node:') &&
  l !== 'at new Promise (<anonymous>)';

function errorBody(err) {
  const isError = err instanceof Error;
  const stack = isError && typeof err.stack === 'string' ? err.stack : '';
  const frames = stack.split('\n').map((l) => l.trim()).filter(isUserFrame);
  const syntaxAt = /^(\/\S+:\d+)\n/.exec(stack); // a SyntaxError's location heads its stack, not a frame
  if (syntaxAt) frames.unshift(`at ${syntaxAt[1]}`);
  return Buffer.from(JSON.stringify({
    errorMessage: isError ? err.message : typeof err === 'string' ? err : util.inspect(err),
    errorType: isError ? err.name || 'Error' : 'Error',
    stackTrace: frames,
  }));
}

async function run(phase, headers, call) {
  const ctx = makeContext(headers);
  // On both streams, like End: the agent attributes each pipe's lines by its own markers.
  process.stderr.write(`FC ${phase} Start RequestId: ${ctx.requestId}\n`);
  say(`FC ${phase} Start RequestId: ${ctx.requestId}`);
  try {
    return [null, await call(ctx)];
  } catch (err) {
    process.stderr.write(`${err instanceof Error && err.stack ? err.stack : util.inspect(err)}\n`);
    return [errorBody(err), null];
  } finally {
    // On both streams: the agent closes the log record when each pipe has delivered its End.
    process.stderr.write(`FC ${phase} End RequestId: ${ctx.requestId}\n`);
    say(`FC ${phase} End RequestId: ${ctx.requestId}`);
  }
}

function reply(res, status, body = Buffer.alloc(0), error = false, type = 'application/octet-stream') {
  const headers = { 'content-type': error ? 'application/json' : type, 'content-length': body.length };
  if (error) headers['x-fc-status'] = '404';
  res.writeHead(status, headers);
  res.end(body);
}

async function invoke(req, res, event) {
  const [err, body] = await run('Invoke', req.headers, async (ctx) =>
    toBuffer(await callUser(await resolveHandler(ctx.function.handler), [event, ctx])));
  reply(res, 200, err || body, err !== null);
}

async function initialize(req, res) {
  const spec = process.env.FC_INITIALIZER_HANDLER || req.headers['x-fc-function-initializer'];
  if (!spec) return reply(res, 200);
  if (!initRun) {
    initRun = run('Initialize', req.headers, async (ctx) => callUser(await resolveHandler(spec), [ctx]));
  }
  const [err] = await initRun;
  if (!err) return reply(res, 200);
  initRun = null;
  reply(res, 500, err, true); // the contract treats any non-2xx as a failed initializer
}

function specialize(req, res, body) {
  if (!cellToken || specialized) return reply(res, 409, Buffer.from('not a waiting cell\n'), false, 'text/plain');
  if (req.headers['x-nubis-cell-token'] !== cellToken) return reply(res, 403, Buffer.from('bad cell token\n'), false, 'text/plain');
  const env = JSON.parse(body.length ? body.toString('utf8') : '{}').env || {};
  for (const [k, v] of Object.entries(env)) process.env[k] = String(v);
  specialized = true;
  return reply(res, 200);
}

async function route(req, res, body) {
  const p = req.url.split('?')[0];
  if (req.method === 'POST' && p === '/nubis/specialize') return specialize(req, res, body);
  if (!specialized) return reply(res, 503, Buffer.from('cell not specialized\n'), false, 'text/plain');
  if (req.method === 'POST' && p === '/invoke') return invoke(req, res, body);
  if (req.method === 'POST' && p === '/initialize') return initialize(req, res);
  reply(res, 404, Buffer.from('not found\n'), false, 'text/plain');
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => route(req, res, Buffer.concat(chunks)).catch((e) => {
    process.stderr.write(`nubis bootstrap: ${e && e.stack ? e.stack : e}\n`);
    if (!res.headersSent) reply(res, 500, Buffer.from('bootstrap error\n'), false, 'text/plain');
  }));
});
// The agent keeps connections in a pool and may idle for long; Node's defaults would close them
// under it (keep-alive 5 s) or cut long invocations (request timeout 300 s).
server.keepAliveTimeout = 0;
server.requestTimeout = 0;
server.headersTimeout = 0;

// As PID 1 SIGTERM is ignored unless handled; exit promptly so the agent need not wait for SIGKILL.
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

server.listen(Number(process.env.FC_SERVER_PORT || process.env.FC_CUSTOM_LISTEN_PORT) || 9000, '0.0.0.0');
