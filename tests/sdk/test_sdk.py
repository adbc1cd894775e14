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
import sys
import time
import traceback
import urllib.request
import uuid
import zipfile

from alibabacloud_fc20230330 import models as fc_models
from alibabacloud_fc20230330.client import Client
from alibabacloud_tea_openapi.models import Config
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
]


def cleanup():
    """Best effort: remove whatever this run created (not counted as a test)."""
    for name in ALL_FUNCTIONS + [FN_BAD_MEMORY]:
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
