#!/usr/bin/env python3
"""End-to-end test of Nubis through the official, unmodified Alibaba Cloud FC 3.0 Python SDK.

    NUBIS_ENDPOINT=127.0.0.1:9000 NUBIS_AK=... NUBIS_SK=... python tests/sdk/test_sdk.py

Needs `alibabacloud-fc20230330` (see tests/sdk/requirements.txt; scripts/test.sh builds a venv).
The tests run in order and share state (the functions they create); each prints PASS/FAIL, and the
last line of output is always `N passed, N failed`. Exit status 1 if any test failed.
"""

import base64
import io
import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile

from alibabacloud_fc20230330 import models as fc_models
from alibabacloud_fc20230330.client import Client
from alibabacloud_tea_openapi.models import Config
from alibabacloud_tea_openapi.utils import Utils as OpenApiUtils
from darabonba.runtime import RuntimeOptions
from Tea.exceptions import TeaException

# ----------------------------------------------------------------------------- configuration

ENDPOINT = os.environ.get("NUBIS_ENDPOINT", "127.0.0.1:9000")
PROTOCOL = "http"
if "://" in ENDPOINT:  # the SDK wants a bare host:port; the scheme goes into `protocol`
    PROTOCOL, ENDPOINT = ENDPOINT.split("://", 1)
ENDPOINT = ENDPOINT.rstrip("/")
AK = os.environ.get("NUBIS_AK", "")
SK = os.environ.get("NUBIS_SK", "")

RUN_ID = uuid.uuid4().hex[:8]
PREFIX = f"sdke2e_{RUN_ID}_"
FN_ECHO = PREFIX + "a_echo"      # prints a line, returns the event upper-cased
FN_RAISE = PREFIX + "b_raise"    # raises ValueError
FN_OTHER = PREFIX + "c_other"    # a third function, for list paging
ALL_FUNCTIONS = [FN_ECHO, FN_RAISE, FN_OTHER]
FN_BAD_MEMORY = PREFIX + "d_badmem"  # must never be created
FN_VER = PREFIX + "e_versions"   # versions and aliases: answers "<tag>:<event>"
FN_SCALE = PREFIX + "f_scaling"  # provision and concurrency configs, the invocation switch
FN_TRIG = PREFIX + "g_triggers"  # trigger resources
FN_WEB = PREFIX + "h_web"        # an HTTP trigger with authType function

PRINT_MARKER = f"nubis-sdk-e2e-print-{RUN_ID}"
RAISE_MARKER = f"nubis-sdk-e2e-boom-{RUN_ID}"
STATE_WAIT_SECONDS = 60


def make_client(ak=None, sk=None):
    return Client(Config(
        access_key_id=AK if ak is None else ak,
        access_key_secret=SK if sk is None else sk,
        endpoint=ENDPOINT,
        protocol=PROTOCOL,
        region_id="cn-hangzhou",
        read_timeout=60000,
        connect_timeout=10000,
    ))


CLIENT = None  # created in main()


def make_zip(files):
    """An in-memory zip of {name: source}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, src in files.items():
            zf.writestr(name, src)
    return buf.getvalue()


CODE_V1 = f'''import os

def handler(event, context):
    print("{PRINT_MARKER} greeting=" + os.environ.get("GREETING", ""), flush=True)
    return event.upper()
'''
CODE_V2 = '''import os

def handler(event, context):
    return (os.environ.get("GREETING", "") + ":v2:").encode() + bytes(reversed(event))
'''
CODE_RAISE = f'''def handler(event, context):
    raise ValueError("{RAISE_MARKER}")
'''
CODE_OTHER = '''def handler(event, context):
    return b"other"
'''
ZIP_V1 = make_zip({"index.py": CODE_V1})
ZIP_V2 = make_zip({"index.py": CODE_V2})
ZIP_RAISE = make_zip({"index.py": CODE_RAISE})
ZIP_OTHER = make_zip({"index.py": CODE_OTHER})
# Made once: a zip's bytes (and so its checksum) depend on the time it was written.
ZIP_TAG_ONE = make_zip({"index.py": 'def handler(event, context):\n    return b"one:" + event\n'})
ZIP_TAG_TWO = make_zip({"index.py": 'def handler(event, context):\n    return b"two:" + event\n'})


def crc64_ecma(data):
    """CRC-64/XZ (ECMA-182, reflected) as used by OSS `x-oss-hash-crc64ecma` and FC `codeChecksum`."""
    poly = 0xC96C5795D7870F42
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return str(crc ^ 0xFFFFFFFFFFFFFFFF)


# ----------------------------------------------------------------------------- helpers

def b64(data):
    return base64.b64encode(data).decode("ascii")


def create_function(name, zip_bytes, memory_size=128, timeout=10, env=None):
    body = fc_models.CreateFunctionInput(
        function_name=name,
        runtime="python3.10",
        handler="index.handler",
        code=fc_models.InputCodeLocation(zip_file=b64(zip_bytes)),
        memory_size=memory_size,
        timeout=timeout,
        environment_variables=env if env is not None else {"GREETING": "hi"},
        description="nubis sdk e2e",
    )
    return CLIENT.create_function(fc_models.CreateFunctionRequest(body=body))


def get_function(name, client=None):
    return (client or CLIENT).get_function(name, fc_models.GetFunctionRequest())


def wait_ready(name):
    """Poll GetFunction while the function is Pending / its last update InProgress (as the fc3 tool does)."""
    deadline = time.time() + STATE_WAIT_SECONDS
    while True:
        fn = get_function(name).body
        if fn.state != "Pending" and fn.last_update_status != "InProgress":
            return fn
        assert time.time() < deadline, f"{name} still state={fn.state} lastUpdateStatus={fn.last_update_status} after {STATE_WAIT_SECONDS}s"
        time.sleep(0.5)


def header(resp, name):
    for k, v in (resp.headers or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def read_body(resp):
    body = resp.body
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return body.read()


def invoke(name, payload, log_type=None):
    headers = fc_models.InvokeFunctionHeaders(x_fc_log_type=log_type) if log_type else fc_models.InvokeFunctionHeaders()
    resp = CLIENT.invoke_function_with_options(
        name, fc_models.InvokeFunctionRequest(body=payload), headers, RuntimeOptions())
    return resp, read_body(resp)


def expect_error(fn, code, status=None):
    """Run fn(); it must raise a TeaException with this error code (and HTTP status if given)."""
    try:
        fn()
    except TeaException as e:
        got_status = getattr(e, "status_code", None) or getattr(e, "statusCode", None)
        assert e.code == code, f"expected error code {code!r}, got {e.code!r} (status {got_status}): {e.message}"
        if status is not None:
            assert got_status == status, f"{code}: expected HTTP {status}, got {got_status}"
        return e
    raise AssertionError(f"expected error {code!r}, but the call succeeded")


def invoke_qualified(name, payload, qualifier):
    resp = CLIENT.invoke_function_with_options(
        name, fc_models.InvokeFunctionRequest(body=payload, qualifier=qualifier),
        fc_models.InvokeFunctionHeaders(), RuntimeOptions())
    return resp, read_body(resp)


def publish(name, description=None):
    return CLIENT.publish_function_version(
        name, fc_models.PublishFunctionVersionRequest(body=fc_models.PublishVersionInput(description=description))).body


# ----------------------------------------------------------------------------- tests

def test_create_function():
    resp = create_function(FN_ECHO, ZIP_V1)
    fn = resp.body
    assert resp.status_code == 200, f"status {resp.status_code}"
    assert fn.function_name == FN_ECHO, fn.function_name
    assert fn.runtime == "python3.10", fn.runtime
    assert fn.code_checksum == crc64_ecma(ZIP_V1), f"codeChecksum {fn.code_checksum!r} != CRC-64/ECMA {crc64_ecma(ZIP_V1)}"
    assert fn.function_id, "functionId missing"
    assert fn.function_arn and fn.function_arn.endswith("functions/" + FN_ECHO), f"functionArn {fn.function_arn!r}"
    create_function(FN_RAISE, ZIP_RAISE)
    create_function(FN_OTHER, ZIP_OTHER, env={})


def test_get_function():
    fn = wait_ready(FN_ECHO)
    assert fn.function_name == FN_ECHO, fn.function_name
    assert fn.runtime == "python3.10", fn.runtime
    assert fn.handler == "index.handler", fn.handler
    assert fn.memory_size == 128, f"memorySize {fn.memory_size!r}"
    assert fn.timeout == 10, f"timeout {fn.timeout!r}"
    assert fn.environment_variables == {"GREETING": "hi"}, f"environmentVariables {fn.environment_variables!r}"
    assert fn.code_checksum == crc64_ecma(ZIP_V1), f"codeChecksum {fn.code_checksum!r} != {crc64_ecma(ZIP_V1)}"
    assert fn.code_size == len(ZIP_V1), f"codeSize {fn.code_size!r} != {len(ZIP_V1)}"
    assert fn.state == "Active", f"state {fn.state!r} ({fn.state_reason})"
    assert fn.created_time and fn.last_modified_time, "createdTime/lastModifiedTime missing"
    for name in (FN_RAISE, FN_OTHER):
        assert wait_ready(name).state == "Active", f"{name} not Active"


def test_list_functions_paging():
    seen, pages, token = [], 0, None
    while True:
        pages += 1
        assert pages <= 10, f"paging did not end after 10 pages (seen {seen})"
        resp = CLIENT.list_functions(fc_models.ListFunctionsRequest(prefix=PREFIX, limit=1, next_token=token))
        fns = resp.body.functions or []
        assert len(fns) <= 1, f"limit=1 returned {len(fns)} functions"
        seen += [f.function_name for f in fns]
        token = resp.body.next_token
        if not token:
            break
    assert len(seen) == len(set(seen)), f"duplicates across pages: {seen}"
    assert sorted(seen) == sorted(ALL_FUNCTIONS), f"listed {seen}, expected {ALL_FUNCTIONS}"
    assert pages >= 3, f"3 functions with limit=1 came in {pages} page(s)"
    # without limit: all three at once, and nothing outside the prefix
    resp = CLIENT.list_functions(fc_models.ListFunctionsRequest(prefix=PREFIX))
    names = [f.function_name for f in resp.body.functions or []]
    assert sorted(names) == sorted(ALL_FUNCTIONS), f"prefix listing {names}"


def test_invoke_sync():
    resp, body = invoke(FN_ECHO, b"hello nubis")
    assert resp.status_code == 200, f"status {resp.status_code}, body {body[:300]!r}"
    assert body == b"HELLO NUBIS", f"body {body[:300]!r}"
    assert header(resp, "x-fc-request-id"), f"no x-fc-request-id header in {sorted(resp.headers or {})}"
    assert header(resp, "x-fc-error-type") is None, f"unexpected x-fc-error-type {header(resp, 'x-fc-error-type')}"


def test_invoke_log_tail():
    resp, body = invoke(FN_ECHO, b"tail me", log_type="Tail")
    assert resp.status_code == 200, f"status {resp.status_code}"
    assert body == b"TAIL ME", f"body {body[:300]!r}"
    rid = header(resp, "x-fc-request-id")
    assert rid, "no x-fc-request-id header"
    raw = header(resp, "x-fc-log-result")
    assert raw, f"no x-fc-log-result header in {sorted(resp.headers or {})}"
    log = base64.b64decode(raw, validate=True).decode("utf-8", "replace")
    assert f"FC Invoke Start RequestId: {rid}" in log, f"log lacks the Start line for {rid}: {log[-800:]!r}"
    assert f"{PRINT_MARKER} greeting=hi" in log, f"log lacks the printed line: {log[-800:]!r}"


def test_invoke_function_error():
    resp, body = invoke(FN_RAISE, b"{}")
    assert resp.status_code == 200, f"a function error must keep status 200, got {resp.status_code}"
    assert header(resp, "x-fc-error-type"), f"no x-fc-error-type header in {sorted(resp.headers or {})}"
    err = json.loads(body)
    assert RAISE_MARKER in err.get("errorMessage", ""), f"errorMessage {err.get('errorMessage')!r}"
    assert err.get("errorType") == "ValueError", f"errorType {err.get('errorType')!r}"


def test_update_function():
    body = fc_models.UpdateFunctionInput(
        code=fc_models.InputCodeLocation(zip_file=b64(ZIP_V2)),
        environment_variables={"GREETING": "yo"},
    )
    fn = CLIENT.update_function(FN_ECHO, fc_models.UpdateFunctionRequest(body=body)).body
    assert fn.code_checksum == crc64_ecma(ZIP_V2), f"codeChecksum {fn.code_checksum!r} != {crc64_ecma(ZIP_V2)}"
    assert fn.environment_variables == {"GREETING": "yo"}, f"environmentVariables {fn.environment_variables!r}"
    assert fn.memory_size == 128 and fn.timeout == 10, f"partial update changed memorySize/timeout: {fn.memory_size}/{fn.timeout}"
    assert fn.runtime == "python3.10" and fn.handler == "index.handler", "partial update lost runtime/handler"
    wait_ready(FN_ECHO)
    resp, out = invoke(FN_ECHO, b"abc")
    assert resp.status_code == 200, f"status {resp.status_code}"
    assert out == b"yo:v2:cba", f"invoke after update returned {out[:300]!r} (old code or env still in use?)"


def test_get_function_code():
    resp = CLIENT.get_function_code(FN_ECHO, fc_models.GetFunctionCodeRequest())
    url, checksum = resp.body.url, resp.body.checksum
    assert url and url.startswith(("http://", "https://")), f"url {url!r} is not an absolute http(s) URL"
    assert checksum == crc64_ecma(ZIP_V2), f"checksum {checksum!r} != {crc64_ecma(ZIP_V2)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        data = r.read()
    assert data == ZIP_V2, f"downloaded {len(data)} bytes differ from the {len(ZIP_V2)} uploaded"


def test_error_function_not_found():
    e = expect_error(lambda: get_function(PREFIX + "missing"), "FunctionNotFound", 404)
    assert getattr(e, "request_id", None) not in (None, "", "None"), "error without RequestId"


def test_error_already_exists():
    expect_error(lambda: create_function(FN_OTHER, ZIP_OTHER), "FunctionAlreadyExists", 409)


def test_error_invalid_memory_size():
    expect_error(lambda: create_function(FN_BAD_MEMORY, ZIP_OTHER, memory_size=100), "InvalidArgument", 400)
    expect_error(lambda: get_function(FN_BAD_MEMORY), "FunctionNotFound", 404)


def test_error_wrong_secret():
    bad = make_client(sk=SK + "x")
    expect_error(lambda: get_function(FN_ECHO, client=bad), "SignatureNotMatch", 403)


def test_error_unknown_access_key():
    bad = make_client(ak="NUBISUNKNOWN" + RUN_ID.upper(), sk="whatever")
    expect_error(lambda: get_function(FN_ECHO, client=bad), "InvalidAccessKeyID", 403)


def test_delete_functions():
    for name in ALL_FUNCTIONS:
        CLIENT.delete_function(name)
    for name in ALL_FUNCTIONS:
        expect_error(lambda n=name: get_function(n), "FunctionNotFound", 404)
    resp = CLIENT.list_functions(fc_models.ListFunctionsRequest(prefix=PREFIX))
    left = [f.function_name for f in resp.body.functions or []]
    assert left == [], f"still listed after delete: {left}"


# ----------------------------------------------------------------------------- async invocation

ASYNC_PREFIX = f"sdkasync_{RUN_ID}_"      # outside PREFIX, so the function listing tests stay exact
FN_WORKER = ASYNC_PREFIX + "worker"       # returns the event upper-cased
FN_AFAIL = ASYNC_PREFIX + "fail"          # raises ValueError
FN_SLOW = ASYNC_PREFIX + "slow"           # sleeps float(event) seconds
FN_SINK = ASYNC_PREFIX + "sink"           # destination of the others
ASYNC_FUNCTIONS = [FN_WORKER, FN_AFAIL, FN_SLOW, FN_SINK]
ASYNC_WAIT_SECONDS = 120                  # generous: cold starts plus default retry delays
TASK_OK = f"ok_{RUN_ID}"
TASK_DEST = f"dest_{RUN_ID}"
TASK_FAIL = f"fail_{RUN_ID}"
TASK_STOP_RUNNING = f"stoprun_{RUN_ID}"
TASK_STOP_EARLY = f"stopearly_{RUN_ID}"
LIST_PREFIX = f"list_{RUN_ID}_"
LIST_TASKS = [LIST_PREFIX + str(i) for i in range(3)]
FINAL_STATUSES = {"Succeeded", "Failed", "Stopped", "Expired", "Invalid"}
TASK_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")

CODE_WORKER = '''import time

def handler(event, context):
    # An "ordered ..." event (test_async_ordering_key) also says when it ran, on the host's
    # monotonic clock (every container of the host reads the same one), which no wall clock
    # step can move.
    start = time.monotonic_ns()
    out = event.upper()
    if event.startswith(b"ordered"):
        out += b" %d %d" % (start, time.monotonic_ns())
    return out
'''
CODE_SLOW = '''import time

def handler(event, context):
    time.sleep(float(event))
    return b"slept"
'''
CODE_SINK = '''def handler(event, context):
    return b"sink"
'''


def fn_arn(name):
    # region and account are any: one Nubis is one account in one region
    return f"acs:fc:cn-hangzhou:1234567890:functions/{name}"


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def invoke_async(name, payload, task_id=None):
    headers = fc_models.InvokeFunctionHeaders(x_fc_invocation_type="Async", x_fc_async_task_id=task_id)
    resp = CLIENT.invoke_function_with_options(
        name, fc_models.InvokeFunctionRequest(body=payload), headers, RuntimeOptions())
    return resp, read_body(resp)


def submit_async(name, payload, task_id=None):
    """Invoke async and check the 202 answer; returns the task id."""
    resp, body = invoke_async(name, payload, task_id)
    assert resp.status_code == 202, f"async invoke of {name}: status {resp.status_code}, body {body[:300]!r}"
    assert body == b"", f"async invoke answered a body: {body[:300]!r}"
    assert header(resp, "x-fc-request-id"), f"no x-fc-request-id header in {sorted(resp.headers or {})}"
    tid = header(resp, "x-fc-async-task-id")
    assert tid, f"no x-fc-async-task-id header in {sorted(resp.headers or {})}"
    if task_id is not None:
        assert tid == task_id, f"x-fc-async-task-id {tid!r}, asked for {task_id!r}"
    assert TASK_ID_RE.match(tid), f"task id {tid!r} breaks the task id rule"
    return tid


def get_task(name, task_id):
    return CLIENT.get_async_task(name, task_id, fc_models.GetAsyncTaskRequest()).body


def wait_task(name, task_id, until=None, seconds=ASYNC_WAIT_SECONDS):
    """Poll GetAsyncTask until `until(task)` (default: a final status); returns the task model."""
    until = until or (lambda t: t.status in FINAL_STATUSES)
    deadline = time.time() + seconds
    while True:
        t = get_task(name, task_id)
        if until(t):
            return t
        assert time.time() < deadline, (
            f"task {task_id} of {name} still {t.status} after {seconds}s; events "
            f"{[(e.status, e.event_detail) for e in t.events or []]}")
        time.sleep(0.2)


def check_task_shape(t, name, task_id):
    """Fields every task must have, with the types the SDK model declares."""
    assert isinstance(t, fc_models.AsyncTask), f"GetAsyncTask body is {type(t).__name__}"
    assert t.task_id == task_id, f"taskId {t.task_id!r} != {task_id!r}"
    assert t.function_arn and t.function_arn.startswith("acs:fc:") and t.function_arn.endswith(":functions/" + name), \
        f"functionArn {t.function_arn!r}"
    assert t.qualifier == "LATEST", f"qualifier {t.qualifier!r}"
    assert t.request_id, "requestId missing"
    assert is_int(t.already_retried_times), f"alreadyRetriedTimes {t.already_retried_times!r} is not an int"
    assert isinstance(t.events, list) and t.events, f"events {t.events!r}"
    for i, e in enumerate(t.events):
        assert isinstance(e, fc_models.AsyncTaskEvent), f"event {i} is {type(e).__name__}"
        assert is_int(e.event_id) and is_int(e.timestamp), f"event {i}: eventId {e.event_id!r} / timestamp {e.timestamp!r} not ints"
        assert isinstance(e.status, str) and e.status, f"event {i}: status {e.status!r}"
    ids = [e.event_id for e in t.events]
    assert ids == list(range(1, len(ids) + 1)), f"eventIds {ids} are not 1..n"
    stamps = [e.timestamp for e in t.events]
    assert stamps == sorted(stamps), f"event timestamps go backwards: {stamps}"
    assert t.events[0].status == "Enqueued", f"first event {t.events[0].status!r}, expected Enqueued"
    if t.status in FINAL_STATUSES:
        assert t.events[-1].status == t.status, f"last event {t.events[-1].status!r} != status {t.status!r}"
        assert is_int(t.end_time), f"endTime {t.end_time!r} is not an int"
        if t.started_time is not None:
            assert is_int(t.started_time), f"startedTime {t.started_time!r} is not an int"
            assert t.end_time >= t.started_time, f"endTime {t.end_time} < startedTime {t.started_time}"
            assert t.duration_ms == t.end_time - t.started_time, \
                f"durationMs {t.duration_ms!r} != endTime - startedTime ({t.end_time - t.started_time})"
        # epoch milliseconds, not seconds
        assert abs(t.end_time / 1000 - time.time()) < 3600, f"endTime {t.end_time} is not epoch ms of now"


def statuses(t):
    return [e.status for e in t.events or []]


def list_tasks(name, **kw):
    return CLIENT.list_async_tasks(name, fc_models.ListAsyncTasksRequest(**kw)).body


def list_all_tasks(name, max_pages=20, **kw):
    """Follow nextToken; returns (tasks, pages)."""
    tasks, pages, token = [], 0, None
    while True:
        pages += 1
        assert pages <= max_pages, f"task paging did not end after {max_pages} pages"
        out = list_tasks(name, next_token=token, **kw)
        assert isinstance(out, fc_models.ListAsyncTaskOutput), f"ListAsyncTasks body is {type(out).__name__}"
        tasks += out.tasks or []
        token = out.next_token
        if not token:
            return tasks, pages


def test_async_create_functions():
    create_function(FN_WORKER, make_zip({"index.py": CODE_WORKER}), env={})
    create_function(FN_AFAIL, ZIP_RAISE, env={})
    create_function(FN_SLOW, make_zip({"index.py": CODE_SLOW}), timeout=60, env={})
    create_function(FN_SINK, make_zip({"index.py": CODE_SINK}), env={})
    for name in ASYNC_FUNCTIONS:
        assert wait_ready(name).state == "Active", f"{name} not Active"


def test_async_invoke_and_get_task():
    resp, body = invoke_async(FN_WORKER, b"hello async", TASK_OK)
    assert resp.status_code == 202, f"status {resp.status_code}, body {body[:300]!r}"
    assert header(resp, "x-fc-async-task-id") == TASK_OK, f"x-fc-async-task-id {header(resp, 'x-fc-async-task-id')!r}"
    rid = header(resp, "x-fc-request-id")
    assert rid, "no x-fc-request-id header"
    t = wait_task(FN_WORKER, TASK_OK)
    check_task_shape(t, FN_WORKER, TASK_OK)
    assert t.status == "Succeeded", f"status {t.status!r} ({t.task_error_message!r}); events {statuses(t)}"
    assert t.request_id == rid, f"requestId {t.request_id!r} != the invoke's x-fc-request-id {rid!r}"
    assert t.return_payload == "HELLO ASYNC", f"returnPayload {t.return_payload!r}"
    assert t.task_payload == "hello async", f"taskPayload {t.task_payload!r}"
    assert t.already_retried_times == 0, f"alreadyRetriedTimes {t.already_retried_times!r}"
    assert is_int(t.started_time), f"startedTime {t.started_time!r} is not an int"
    assert "Running" in statuses(t), f"no Running event: {statuses(t)}"
    assert t.task_error_message is None, f"taskErrorMessage {t.task_error_message!r} on a success"
    assert not t.destination_status, f"destinationStatus {t.destination_status!r} without a destination"
    # no task id: the server makes one up, valid by the task id rule, and it is queryable
    tid = submit_async(FN_WORKER, b"anon")
    t = wait_task(FN_WORKER, tid)
    check_task_shape(t, FN_WORKER, tid)
    assert t.status == "Succeeded" and t.return_payload == "ANON", f"{t.status} {t.return_payload!r}"


def test_async_duplicate_task_id():
    expect_error(lambda: invoke_async(FN_WORKER, b"again", TASK_OK), "AsyncTaskAlreadyExists", 409)
    t = get_task(FN_WORKER, TASK_OK)
    assert t.task_payload == "hello async" and t.status == "Succeeded", \
        f"the refused duplicate changed the task: {t.task_payload!r} {t.status!r}"
    expect_error(lambda: invoke_async(FN_WORKER, b"x", "9starts-with-digit"), "InvalidArgument", 400)


def invoke_keyed(name, payload, task_id, key):
    """Async invoke with a Nubis ordering key, passed the SDK's way for extra headers."""
    headers = fc_models.InvokeFunctionHeaders(x_fc_invocation_type="Async", x_fc_async_task_id=task_id,
                                              common_headers={"x-nubis-ordering-key": key})
    resp = CLIENT.invoke_function_with_options(name, fc_models.InvokeFunctionRequest(body=payload), headers, RuntimeOptions())
    return resp, read_body(resp)


def test_async_ordering_key():
    # x-nubis-ordering-key (a Nubis extension): one key's events run one at a time, in order.
    ids = [f"ordered_{i}" for i in range(3)]
    for i, tid in enumerate(ids):
        resp, body = invoke_keyed(FN_WORKER, f"ordered {i}".encode(), tid, "sdk key/1")
        assert resp.status_code == 202, f"status {resp.status_code}, body {body[:300]!r}"
    tasks = [wait_task(FN_WORKER, tid) for tid in ids]
    assert [t.status for t in tasks] == ["Succeeded"] * 3, [(t.task_id, t.status) for t in tasks]
    # What the function saw: each event ran after the one before it had returned.
    ran = []
    for i, t in enumerate(tasks):
        words = (t.return_payload or "").split()
        assert len(words) == 4 and words[:2] == ["ORDERED", str(i)], f"{t.task_id} returned {t.return_payload!r}"
        ran.append((int(words[2]), int(words[3])))
    # What the server recorded: each event started after the one before it was final.
    for (before, after), (b, a) in zip(zip(tasks, tasks[1:]), zip(ran, ran[1:])):
        started = next(e.timestamp for e in after.events if e.status == "Running")
        detail = (f"{before.task_id} events {[(e.status, e.timestamp) for e in before.events]}, ran {b} (monotonic ns); "
                  f"{after.task_id} events {[(e.status, e.timestamp) for e in after.events]}, ran {a}")
        assert a[0] >= b[1], f"{after.task_id} ran before {before.task_id} had returned: {detail}"
        assert started >= before.events[-1].timestamp, \
            f"{after.task_id} started at {started}, before {before.task_id} ended at {before.events[-1].timestamp}: {detail}"
    expect_error(lambda: invoke_keyed(FN_WORKER, b"x", None, "k" * 257), "InvalidArgument", 400)


def test_async_get_task_errors():
    expect_error(lambda: get_task(FN_WORKER, "nosuchtask_" + RUN_ID), "AsyncTaskNotFound", 404)
    expect_error(lambda: get_task(ASYNC_PREFIX + "missing", TASK_OK), "FunctionNotFound", 404)


def check_config(c, name, retries, on_success=None, on_failure=None):
    assert isinstance(c, fc_models.AsyncConfig), f"config body is {type(c).__name__}"
    assert c.function_arn and c.function_arn.endswith(":functions/" + name), f"functionArn {c.function_arn!r}"
    assert is_int(c.max_async_retry_attempts) and c.max_async_retry_attempts == retries, \
        f"maxAsyncRetryAttempts {c.max_async_retry_attempts!r} != {retries}"
    assert is_int(c.max_async_event_age_in_seconds) and c.max_async_event_age_in_seconds == 86400, \
        f"maxAsyncEventAgeInSeconds {c.max_async_event_age_in_seconds!r} (default 86400)"
    assert c.created_time and c.last_modified_time, "createdTime/lastModifiedTime missing"
    assert isinstance(c.destination_config, fc_models.DestinationConfig), f"destinationConfig {c.destination_config!r}"
    got_s = c.destination_config.on_success.destination if c.destination_config.on_success else None
    got_f = c.destination_config.on_failure.destination if c.destination_config.on_failure else None
    assert (got_s, got_f) == (on_success, on_failure), f"destinations {(got_s, got_f)} != {(on_success, on_failure)}"


def put_config(name, retries, on_success=None, on_failure=None):
    dc = fc_models.DestinationConfig(
        on_success=fc_models.Destination(destination=on_success) if on_success else None,
        on_failure=fc_models.Destination(destination=on_failure) if on_failure else None,
    )
    body = fc_models.PutAsyncInvokeConfigInput(max_async_retry_attempts=retries, destination_config=dc)
    return CLIENT.put_async_invoke_config(name, fc_models.PutAsyncInvokeConfigRequest(body=body))


def test_async_invoke_config():
    expect_error(lambda: CLIENT.get_async_invoke_config(FN_WORKER, fc_models.GetAsyncInvokeConfigRequest()),
                 "AsyncConfigNotExists", 404)
    sink = fn_arn(FN_SINK)
    resp = put_config(FN_WORKER, 1, on_success=sink)
    assert resp.status_code == 200, f"status {resp.status_code}"
    check_config(resp.body, FN_WORKER, 1, on_success=sink)
    c = CLIENT.get_async_invoke_config(FN_WORKER, fc_models.GetAsyncInvokeConfigRequest()).body
    check_config(c, FN_WORKER, 1, on_success=sink)
    put_config(FN_AFAIL, 1, on_failure=sink)
    out = CLIENT.list_async_invoke_configs(fc_models.ListAsyncInvokeConfigsRequest(function_name=FN_WORKER)).body
    assert isinstance(out, fc_models.ListAsyncInvokeConfigOutput), f"body is {type(out).__name__}"
    assert len(out.configs or []) == 1, f"functionName filter listed {len(out.configs or [])} configs"
    check_config(out.configs[0], FN_WORKER, 1, on_success=sink)
    out = CLIENT.list_async_invoke_configs(fc_models.ListAsyncInvokeConfigsRequest(function_name=FN_AFAIL)).body
    assert len(out.configs or []) == 1, f"functionName filter listed {len(out.configs or [])} configs"
    check_config(out.configs[0], FN_AFAIL, 1, on_failure=sink)
    # unsupported destination / out of range retries are refused and change nothing
    expect_error(lambda: put_config(FN_WORKER, 1, on_success="acs:mns:cn-hangzhou:1:/queues/q/messages"),
                 "InvalidArgument", 400)
    expect_error(lambda: put_config(FN_WORKER, 9), "InvalidArgument", 400)
    expect_error(lambda: put_config(ASYNC_PREFIX + "missing", 1), "FunctionNotFound", 404)
    c = CLIENT.get_async_invoke_config(FN_WORKER, fc_models.GetAsyncInvokeConfigRequest()).body
    check_config(c, FN_WORKER, 1, on_success=sink)


def find_sink_record(task_id, condition):
    """The sink's task whose payload is the destination record of `task_id`; polls until it is there."""
    deadline = time.time() + ASYNC_WAIT_SECONDS
    while True:
        tasks, _ = list_all_tasks(FN_SINK, include_payload=True, limit=100)
        for t in tasks:
            try:
                rec = json.loads(t.task_payload or "")
            except ValueError:
                continue
            ctx = rec.get("requestContext") or {}
            if ctx.get("taskId") == task_id:
                assert ctx.get("condition") == condition, f"destination record condition {ctx.get('condition')!r} != {condition}"
                return t, rec
        assert time.time() < deadline, f"no sink task carries the destination record of {task_id} after {ASYNC_WAIT_SECONDS}s"
        time.sleep(0.3)


def test_async_destination_on_success():
    submit_async(FN_WORKER, b"to the sink", TASK_DEST)
    t = wait_task(FN_WORKER, TASK_DEST)
    check_task_shape(t, FN_WORKER, TASK_DEST)
    assert t.status == "Succeeded", f"status {t.status!r}; events {statuses(t)}"
    assert t.destination_status and t.destination_status.startswith("Succeeded"), f"destinationStatus {t.destination_status!r}"
    st, rec = find_sink_record(TASK_DEST, "Success")
    assert rec.get("requestPayload") == "to the sink", f"record requestPayload {rec.get('requestPayload')!r}"
    assert rec.get("responsePayload") == "TO THE SINK", f"record responsePayload {rec.get('responsePayload')!r}"
    st = wait_task(FN_SINK, st.task_id)
    assert st.status == "Succeeded" and st.return_payload == "sink", f"sink task {st.status} {st.return_payload!r}"


def test_async_retry_then_failed():
    submit_async(FN_AFAIL, b"{}", TASK_FAIL)
    t = wait_task(FN_AFAIL, TASK_FAIL)
    check_task_shape(t, FN_AFAIL, TASK_FAIL)
    assert t.status == "Failed", f"status {t.status!r}; events {statuses(t)}"
    assert t.already_retried_times == 1, f"alreadyRetriedTimes {t.already_retried_times!r} with maxAsyncRetryAttempts=1"
    assert statuses(t).count("Running") == 2, f"expected 2 attempts (Running events): {statuses(t)}"
    assert "Retrying" in statuses(t), f"no Retrying event: {statuses(t)}"
    assert RAISE_MARKER in (t.task_error_message or ""), f"taskErrorMessage {t.task_error_message!r}"
    assert t.return_payload in (None, ""), f"returnPayload {t.return_payload!r} on a failure"
    assert t.destination_status and t.destination_status.startswith("Succeeded"), f"destinationStatus {t.destination_status!r}"
    _, rec = find_sink_record(TASK_FAIL, "RetriesExhausted")
    assert rec["requestContext"].get("approximateInvokeCount") == 2, f"approximateInvokeCount {rec['requestContext']!r}"


def test_list_async_tasks():
    for i, tid in enumerate(LIST_TASKS):
        submit_async(FN_WORKER, f"payload {i}".encode(), tid)
    for tid in LIST_TASKS:
        assert wait_task(FN_WORKER, tid).status == "Succeeded", f"{tid} did not succeed"
    # prefix + limit=1 paging + includePayload
    tasks, pages = list_all_tasks(FN_WORKER, prefix=LIST_PREFIX, limit=1, include_payload=True)
    ids = [t.task_id for t in tasks]
    assert sorted(ids) == sorted(LIST_TASKS), f"prefix paging listed {ids}, expected {LIST_TASKS}"
    assert pages >= 3, f"3 tasks with limit=1 came in {pages} page(s)"
    assert ids == list(reversed(LIST_TASKS)), f"default order is newest first: {ids}"
    for t in tasks:
        check_task_shape(t, FN_WORKER, t.task_id)
        i = LIST_TASKS.index(t.task_id)
        assert t.task_payload == f"payload {i}", f"{t.task_id}: taskPayload {t.task_payload!r} with includePayload"
        assert t.return_payload == f"PAYLOAD {i}", f"{t.task_id}: returnPayload {t.return_payload!r}"
    asc = [t.task_id for t in list_tasks(FN_WORKER, prefix=LIST_PREFIX, sort_order_by_time="asc").tasks or []]
    assert asc == LIST_TASKS, f"sortOrderByTime=asc listed {asc}"
    # without includePayload: no payload
    out = list_tasks(FN_WORKER, prefix=LIST_PREFIX)
    assert len(out.tasks or []) == 3 and not out.next_token, f"{len(out.tasks or [])} tasks, nextToken {out.next_token!r}"
    assert all(t.task_payload is None for t in out.tasks), "taskPayload listed without includePayload"
    # status filter
    ok = list_all_tasks(FN_WORKER, status="Succeeded", limit=100)[0]
    ok_ids = {t.task_id for t in ok}
    assert set(LIST_TASKS + [TASK_OK, TASK_DEST]) <= ok_ids, f"status=Succeeded misses tasks: {sorted(ok_ids)}"
    assert all(t.status == "Succeeded" for t in ok), f"status=Succeeded listed {[t.status for t in ok]}"
    out = list_tasks(FN_WORKER, status="Failed")
    assert not out.tasks, f"status=Failed listed {[t.task_id for t in out.tasks]} on a function that never fails"
    failed = list_tasks(FN_AFAIL, status="Failed").tasks or []
    assert [t.task_id for t in failed] == [TASK_FAIL], f"status=Failed on {FN_AFAIL} listed {[t.task_id for t in failed]}"
    expect_error(lambda: list_tasks(FN_WORKER, status="Done"), "InvalidArgument", 400)
    # started time window (epoch ms)
    first = get_task(FN_WORKER, LIST_TASKS[0])
    future = int(time.time() * 1000) + 3_600_000
    out = list_tasks(FN_WORKER, prefix=LIST_PREFIX, started_time_begin=future)
    assert not out.tasks, f"startedTimeBegin in the future listed {[t.task_id for t in out.tasks]}"
    out = list_tasks(FN_WORKER, prefix=LIST_PREFIX, started_time_begin=first.events[0].timestamp - 60_000, started_time_end=future)
    assert len(out.tasks or []) == 3, f"a window around now listed {len(out.tasks or [])} of 3 tasks"


def test_stop_async_task_running():
    submit_async(FN_SLOW, b"6", TASK_STOP_RUNNING)
    t = wait_task(FN_SLOW, TASK_STOP_RUNNING, until=lambda t: t.status == "Running" or t.status in FINAL_STATUSES)
    assert t.status == "Running", f"task reached {t.status!r} before it was seen Running: {statuses(t)}"
    resp = CLIENT.stop_async_task(FN_SLOW, TASK_STOP_RUNNING, fc_models.StopAsyncTaskRequest())
    assert resp.status_code in (200, 204), f"StopAsyncTask status {resp.status_code}"
    t = get_task(FN_SLOW, TASK_STOP_RUNNING)
    assert t.status in ("Stopping", "Stopped"), f"status {t.status!r} right after StopAsyncTask"
    t = wait_task(FN_SLOW, TASK_STOP_RUNNING)
    check_task_shape(t, FN_SLOW, TASK_STOP_RUNNING)
    assert t.status == "Stopped", f"status {t.status!r}; events {statuses(t)}"
    assert "Stopping" in statuses(t), f"no Stopping event: {statuses(t)}"
    assert t.already_retried_times == 0, f"a stopped task was retried: {t.already_retried_times}"
    # a finished task cannot be stopped; a missing one is 404
    expect_error(lambda: CLIENT.stop_async_task(FN_SLOW, TASK_STOP_RUNNING, fc_models.StopAsyncTaskRequest()),
                 "InvalidArgument", 400)
    expect_error(lambda: CLIENT.stop_async_task(FN_SLOW, "nosuchtask_" + RUN_ID, fc_models.StopAsyncTaskRequest()),
                 "AsyncTaskNotFound", 404)


def test_stop_async_task_early():
    """Stopped straight after submission: whether it was still queued or already running, it ends Stopped."""
    submit_async(FN_SLOW, b"1", TASK_STOP_EARLY)
    CLIENT.stop_async_task(FN_SLOW, TASK_STOP_EARLY, fc_models.StopAsyncTaskRequest())
    t = wait_task(FN_SLOW, TASK_STOP_EARLY)
    check_task_shape(t, FN_SLOW, TASK_STOP_EARLY)
    assert t.status == "Stopped", f"status {t.status!r}; events {statuses(t)}"
    assert t.return_payload in (None, ""), f"returnPayload {t.return_payload!r} on a stopped task"
    stopped = list_tasks(FN_SLOW, status="Stopped").tasks or []
    assert sorted(x.task_id for x in stopped) == sorted([TASK_STOP_RUNNING, TASK_STOP_EARLY]), \
        f"status=Stopped listed {[x.task_id for x in stopped]}"


def test_delete_async_invoke_config():
    resp = CLIENT.delete_async_invoke_config(FN_WORKER, fc_models.DeleteAsyncInvokeConfigRequest())
    assert resp.status_code in (200, 204), f"status {resp.status_code}"
    expect_error(lambda: CLIENT.get_async_invoke_config(FN_WORKER, fc_models.GetAsyncInvokeConfigRequest()),
                 "AsyncConfigNotExists", 404)
    expect_error(lambda: CLIENT.delete_async_invoke_config(FN_WORKER, fc_models.DeleteAsyncInvokeConfigRequest()),
                 "AsyncConfigNotExists", 404)
    out = CLIENT.list_async_invoke_configs(fc_models.ListAsyncInvokeConfigsRequest(function_name=FN_WORKER)).body
    assert not out.configs, f"still listed after delete: {out.configs}"
    # the other function's config is untouched
    c = CLIENT.get_async_invoke_config(FN_AFAIL, fc_models.GetAsyncInvokeConfigRequest()).body
    check_config(c, FN_AFAIL, 1, on_failure=fn_arn(FN_SINK))
    CLIENT.delete_async_invoke_config(FN_AFAIL, fc_models.DeleteAsyncInvokeConfigRequest())


def test_async_delete_functions():
    for name in ASYNC_FUNCTIONS:
        CLIENT.delete_function(name)
    for name in ASYNC_FUNCTIONS:
        expect_error(lambda n=name: get_function(n), "FunctionNotFound", 404)


# ----------------------------------------------------------------------------- versions and aliases

def test_publish_function_version():
    create_function(FN_VER, ZIP_TAG_ONE)
    v = publish(FN_VER, "one")
    assert (v.version_id, v.description) == ("1", "one"), f"version {v.to_map()}"
    assert v.created_time and v.last_modified_time, f"times missing: {v.to_map()}"
    # LATEST unchanged since version 1: refused as FC does
    e = expect_error(lambda: publish(FN_VER), "VersionPublishError", 400)
    assert "No changes were made since last publish" in e.message, e.message
    CLIENT.update_function(FN_VER, fc_models.UpdateFunctionRequest(body=fc_models.UpdateFunctionInput(
        code=fc_models.InputCodeLocation(zip_file=b64(ZIP_TAG_TWO)))))
    assert publish(FN_VER, "two").version_id == "2"
    page = CLIENT.list_function_versions(FN_VER, fc_models.ListFunctionVersionsRequest(direction="FORWARD", limit=1)).body
    assert [x.version_id for x in page.versions] == ["1"] and page.direction == "FORWARD" and page.next_token, page.to_map()
    page = CLIENT.list_function_versions(FN_VER, fc_models.ListFunctionVersionsRequest(
        direction="FORWARD", limit=1, next_token=page.next_token)).body
    assert [x.version_id for x in page.versions] == ["2"] and not page.next_token, page.to_map()
    newest = CLIENT.list_function_versions(FN_VER, fc_models.ListFunctionVersionsRequest()).body
    assert [x.version_id for x in newest.versions] == ["2", "1"], newest.to_map()
    fn = CLIENT.get_function(FN_VER, fc_models.GetFunctionRequest(qualifier="1")).body
    assert fn.code_checksum == crc64_ecma(ZIP_TAG_ONE), f"version 1 checksum {fn.code_checksum}"


def test_invoke_with_qualifier():
    resp, body = invoke_qualified(FN_VER, b"x", "1")
    assert body == b"one:x", f"version 1 answered {body!r}"
    assert header(resp, "x-fc-invocation-service-version") == "1", dict(resp.headers)
    resp, body = invoke_qualified(FN_VER, b"x", None)
    assert body == b"two:x" and header(resp, "x-fc-invocation-service-version") == "LATEST", body
    expect_error(lambda: invoke_qualified(FN_VER, b"x", "9"), "VersionNotFound", 404)
    expect_error(lambda: invoke_qualified(FN_VER, b"x", "nope"), "AliasNotFound", 404)


def test_create_alias_and_route():
    a = CLIENT.create_alias(FN_VER, fc_models.CreateAliasRequest(body=fc_models.CreateAliasInput(
        alias_name="prod", version_id="1", description="canary", additional_version_weight={"2": 0.5}))).body
    assert (a.alias_name, a.version_id, a.description) == ("prod", "1", "canary"), a.to_map()
    assert a.additional_version_weight == {"2": 0.5}, a.to_map()
    expect_error(lambda: CLIENT.create_alias(FN_VER, fc_models.CreateAliasRequest(body=fc_models.CreateAliasInput(
        alias_name="prod", version_id="2"))), "AliasAlreadyExists", 409)
    # Half the calls each way: 40 calls all landing on one version has probability 2 * 0.5^40.
    seen = set()
    for _ in range(40):
        resp, body = invoke_qualified(FN_VER, b"y", "prod")
        served = header(resp, "x-fc-invocation-service-version")
        assert body == {"1": b"one:y", "2": b"two:y"}.get(served), f"version {served!r} answered {body!r}"
        seen.add(served)
    assert seen == {"1", "2"}, f"calls through the alias went only to {seen}"
    out = CLIENT.list_aliases(FN_VER, fc_models.ListAliasesRequest(prefix="pr")).body
    assert [x.alias_name for x in out.aliases] == ["prod"], out.to_map()
    a = CLIENT.update_alias(FN_VER, "prod", fc_models.UpdateAliasRequest(body=fc_models.UpdateAliasInput(
        additional_version_weight={}))).body
    assert a.version_id == "1" and not a.additional_version_weight, a.to_map()
    assert CLIENT.get_alias(FN_VER, "prod").body.description == "canary"
    expect_error(lambda: CLIENT.delete_function_version(FN_VER, "1"), "VersionInUse", 409)
    CLIENT.delete_function_version(FN_VER, "2")
    CLIENT.delete_alias(FN_VER, "prod")
    expect_error(lambda: CLIENT.get_alias(FN_VER, "prod"), "AliasNotFound", 404)
    CLIENT.delete_function(FN_VER)
    expect_error(lambda: invoke_qualified(FN_VER, b"x", "1"), "FunctionNotFound", 404)


# ----------------------------------------------------------------------------- scaling configs and the invocation switch

def test_provision_config():
    create_function(FN_SCALE, ZIP_V1)
    body = fc_models.PutProvisionConfigInput(target=2, always_allocate_cpu=False, scheduled_actions=[
        fc_models.ScheduledAction(name="night", schedule_expression="cron(0 0 22 * * *)", target=0)])
    c = CLIENT.put_provision_config(FN_SCALE, fc_models.PutProvisionConfigRequest(body=body)).body
    assert (c.target, c.default_target, c.current, c.always_allocate_cpu) == (2, 2, 0, False), c.to_map()
    assert c.function_arn.startswith("acs:fc:") and c.function_arn.endswith(f":functions/{FN_SCALE}"), c.function_arn
    assert [a.name for a in c.scheduled_actions] == ["night"], c.to_map()
    got = CLIENT.get_provision_config(FN_SCALE, fc_models.GetProvisionConfigRequest(qualifier="LATEST")).body
    # `current` is live: the provisioner may have started instances since the Put.
    assert 0 <= got.current <= 2, got.to_map()
    same = lambda m: {k: v for k, v in m.items() if k != "current"}
    assert same(got.to_map()) == same(c.to_map()), f"{got.to_map()} != {c.to_map()}"
    out = CLIENT.list_provision_configs(fc_models.ListProvisionConfigsRequest(function_name=FN_SCALE)).body
    assert [x.target for x in out.provision_configs] == [2] and not out.next_token, out.to_map()
    publish(FN_SCALE)
    e = expect_error(lambda: CLIENT.put_provision_config(FN_SCALE, fc_models.PutProvisionConfigRequest(
        body=fc_models.PutProvisionConfigInput(target=1), qualifier="1")), "InvalidArgument", 400)
    assert "LATEST or an alias" in e.message, e.message
    expect_error(lambda: CLIENT.put_provision_config(FN_SCALE, fc_models.PutProvisionConfigRequest(
        body=fc_models.PutProvisionConfigInput(target=1), qualifier="nope")), "AliasNotFound", 404)
    CLIENT.delete_provision_config(FN_SCALE, fc_models.DeleteProvisionConfigRequest(qualifier="LATEST"))
    expect_error(lambda: CLIENT.get_provision_config(FN_SCALE, fc_models.GetProvisionConfigRequest()),
                 "ProvisionConfigNotFound", 404)


def test_concurrency_config():
    c = CLIENT.put_concurrency_config(FN_SCALE, fc_models.PutConcurrencyConfigRequest(
        body=fc_models.PutConcurrencyInput(reserved_concurrency=5))).body
    assert c.function_arn.endswith(f":functions/{FN_SCALE}") and c.reserved_concurrency == 5, c.to_map()
    assert CLIENT.get_concurrency_config(FN_SCALE).body.reserved_concurrency == 5
    out = CLIENT.list_concurrency_configs(fc_models.ListConcurrencyConfigsRequest(function_name=FN_SCALE)).body
    assert [x.reserved_concurrency for x in out.configs] == [5], out.to_map()
    CLIENT.delete_concurrency_config(FN_SCALE)
    expect_error(lambda: CLIENT.get_concurrency_config(FN_SCALE), "ConcurrencyConfigNotFound", 404)


def test_disable_enable_invocation():
    _, body = invoke(FN_SCALE, b"on")
    assert body == b"ON", body
    r = CLIENT.disable_function_invocation(FN_SCALE, fc_models.DisableFunctionInvocationRequest(
        abort_ongoing_request=False, reason="sdk e2e")).body
    assert r.success is True, r.to_map()
    e = expect_error(lambda: invoke(FN_SCALE, b"off"), "FunctionInvocationDisabled", 412)
    assert "sdk e2e" in e.message, e.message
    assert CLIENT.enable_function_invocation(FN_SCALE).body.success is True
    _, body = invoke(FN_SCALE, b"again")
    assert body == b"AGAIN", body
    CLIENT.delete_function(FN_SCALE)


# ----------------------------------------------------------------------------- triggers

def test_trigger_crud():
    create_function(FN_TRIG, ZIP_V1)
    # A config with odd spacing: FC's SDK and tools read back exactly the string they sent.
    http_cfg = '{"authType": "anonymous",  "methods": ["GET", "POST"]}'
    t = CLIENT.create_trigger(FN_TRIG, fc_models.CreateTriggerRequest(body=fc_models.CreateTriggerInput(
        trigger_name="web", trigger_type="http", trigger_config=http_cfg, description="web"))).body
    assert (t.trigger_name, t.trigger_type, t.trigger_config, t.qualifier, t.status) == \
        ("web", "http", http_cfg, "LATEST", "Success"), t.to_map()
    assert t.target_arn.endswith(f":functions/{FN_TRIG}") and t.trigger_id, t.to_map()
    assert t.http_trigger.url_internet.endswith(f"/http/{FN_TRIG}/web"), t.to_map()
    assert t.http_trigger.url_intranet.endswith(f"/http-intranet/{FN_TRIG}/web"), t.to_map()
    timer_cfg = '{"cronExpression":"@every 1m","payload":"{\\"a\\":1}","enable":false}'
    CLIENT.create_trigger(FN_TRIG, fc_models.CreateTriggerRequest(body=fc_models.CreateTriggerInput(
        trigger_name="tick", trigger_type="timer", trigger_config=timer_cfg, qualifier="LATEST")))
    expect_error(lambda: CLIENT.create_trigger(FN_TRIG, fc_models.CreateTriggerRequest(body=fc_models.CreateTriggerInput(
        trigger_name="web", trigger_type="http", trigger_config=http_cfg))), "TriggerAlreadyExists", 409)
    e = expect_error(lambda: CLIENT.create_trigger(FN_TRIG, fc_models.CreateTriggerRequest(body=fc_models.CreateTriggerInput(
        trigger_name="bucket", trigger_type="oss", trigger_config="{}"))), "InvalidArgument", 400)
    assert "not supported by Nubis" in e.message, e.message
    got = CLIENT.get_trigger(FN_TRIG, "tick").body
    assert (got.trigger_config, got.trigger_type) == (timer_cfg, "timer"), got.to_map()
    out = CLIENT.list_triggers(FN_TRIG, fc_models.ListTriggersRequest(limit=1)).body
    assert [x.trigger_name for x in out.triggers] == ["tick"] and out.next_token, out.to_map()
    out = CLIENT.list_triggers(FN_TRIG, fc_models.ListTriggersRequest(limit=1, next_token=out.next_token)).body
    assert [x.trigger_name for x in out.triggers] == ["web"] and not out.next_token, out.to_map()
    new_cfg = '{"authType":"function","methods":["PUT"]}'
    u = CLIENT.update_trigger(FN_TRIG, "web", fc_models.UpdateTriggerRequest(body=fc_models.UpdateTriggerInput(
        trigger_config=new_cfg, description="updated"))).body
    assert (u.trigger_config, u.description, u.trigger_id) == (new_cfg, "updated", t.trigger_id), u.to_map()
    expect_error(lambda: CLIENT.delete_function(FN_TRIG), "FunctionNotEmpty", 412)
    CLIENT.delete_trigger(FN_TRIG, "web")
    CLIENT.delete_trigger(FN_TRIG, "tick")
    expect_error(lambda: CLIENT.get_trigger(FN_TRIG, "web"), "TriggerNotFound", 404)
    CLIENT.delete_function(FN_TRIG)


CODE_WEB = """import json

def handler(event, context):
    e = json.loads(event)
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"path": e["rawPath"], "q": e["queryParameters"], "body": e["body"]})}
"""


def http_call(url, method, body=b"", headers=None):
    """(status, headers, body) of a plain HTTP call; errors are answers too."""
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_http_trigger_signed_with_openapi_util():
    """authType=function, signed the way FC's samples sign trigger calls: openapi-util's
    get_authorization over {method, pathname, headers, query} with an empty payload."""
    create_function(FN_WEB, make_zip({"index.py": CODE_WEB}))
    t = CLIENT.create_trigger(FN_WEB, fc_models.CreateTriggerRequest(body=fc_models.CreateTriggerInput(
        trigger_name="web", trigger_type="http",
        trigger_config=json.dumps({"authType": "function", "methods": ["GET", "POST"]})))).body
    base = t.http_trigger.url_internet
    url = urllib.parse.urlparse(base + "/items/1")
    query = {"a b": "c d", "n": "1"}
    headers = {"x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "x-acs-security-token": ""}
    req = type("Req", (), {"method": "POST", "pathname": url.path.replace("$", "%24"), "headers": headers, "query": query})()
    headers["Authorization"] = OpenApiUtils.get_authorization(req, "ACS3-HMAC-SHA256", "", AK, SK)
    full = base + "/items/1?" + urllib.parse.urlencode(query)
    status, _, body = http_call(full, "POST", b"payload", headers)
    assert status == 200, (status, body)
    assert json.loads(body) == {"path": "/items/1", "q": {"a b": "c d", "n": "1"}, "body": "payload"}, body
    status, _, body = http_call(full, "POST", b"payload", {k: v for k, v in headers.items() if k != "Authorization"})
    assert status == 400 and json.loads(body)["Code"] == "MissingRequiredHeader", (status, body)
    bad = dict(headers, Authorization=OpenApiUtils.get_authorization(req, "ACS3-HMAC-SHA256", "", AK, SK + "x"))
    status, _, body = http_call(full, "POST", b"payload", bad)
    assert status == 403 and json.loads(body)["Code"] == "SignatureNotMatch", (status, body)
    status, _, body = http_call(base, "PUT", b"", headers)
    assert status == 405 and json.loads(body)["Code"] == "MethodNotAllowed", (status, body)
    CLIENT.delete_trigger(FN_WEB, "web")
    status, _, body = http_call(full, "POST", b"payload", headers)
    assert status == 404 and json.loads(body)["Code"] == "TriggerNotFound", (status, body)
    CLIENT.delete_function(FN_WEB)


TESTS = [
    test_create_function,
    test_get_function,
    test_list_functions_paging,
    test_invoke_sync,
    test_invoke_log_tail,
    test_invoke_function_error,
    test_update_function,
    test_get_function_code,
    test_error_function_not_found,
    test_error_already_exists,
    test_error_invalid_memory_size,
    test_error_wrong_secret,
    test_error_unknown_access_key,
    test_delete_functions,
    test_publish_function_version,
    test_invoke_with_qualifier,
    test_create_alias_and_route,
    test_provision_config,
    test_concurrency_config,
    test_disable_enable_invocation,
    test_trigger_crud,
    test_http_trigger_signed_with_openapi_util,
    test_async_create_functions,
    test_async_invoke_and_get_task,
    test_async_duplicate_task_id,
    test_async_ordering_key,
    test_async_get_task_errors,
    test_async_invoke_config,
    test_async_destination_on_success,
    test_async_retry_then_failed,
    test_list_async_tasks,
    test_stop_async_task_running,
    test_stop_async_task_early,
    test_delete_async_invoke_config,
    test_async_delete_functions,
]


def cleanup():
    """Best effort: remove whatever this run created (not counted as a test)."""
    for name in ALL_FUNCTIONS + [FN_BAD_MEMORY, FN_VER, FN_SCALE, FN_TRIG, FN_WEB] + ASYNC_FUNCTIONS:
        try:
            for t in CLIENT.list_triggers(name, fc_models.ListTriggersRequest(limit=100)).body.triggers:
                CLIENT.delete_trigger(name, t.trigger_name)
        except Exception:
            pass
        try:
            CLIENT.delete_function(name)
        except Exception:
            pass


def describe(exc):
    if isinstance(exc, AssertionError):
        return str(exc) or "assertion failed"
    if isinstance(exc, TeaException):
        return f"{type(exc).__name__} code={exc.code!r}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def main():
    global CLIENT
    print(f"SDK e2e against {PROTOCOL}://{ENDPOINT} (functions {PREFIX}*)", flush=True)
    passed = failed = 0
    if not AK or not SK:
        print("FAIL setup: NUBIS_AK and NUBIS_SK must be set", flush=True)
        failed = len(TESTS)
    else:
        CLIENT = make_client()
        for test in TESTS:
            t0 = time.time()
            try:
                test()
            except Exception as exc:  # noqa: BLE001 - report every kind of failure and go on
                failed += 1
                print(f"FAIL {test.__name__} ({time.time() - t0:.2f}s): {describe(exc)}", flush=True)
                if os.environ.get("NUBIS_SDK_TEST_VERBOSE"):
                    traceback.print_exc()
            else:
                passed += 1
                print(f"PASS {test.__name__} ({time.time() - t0:.2f}s)", flush=True)
        cleanup()
    sys.stderr.flush()
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
