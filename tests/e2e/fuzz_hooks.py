"""Schemathesis hooks for the fuzz test (``SCHEMATHESIS_HOOKS=tests.e2e.fuzz_hooks`` for the
command line): the client keeps the Idempotency-Key contract, one key per request.

The same key with another body is a 422 by design (test_idempotency.py), a rule between
requests that JSON Schema cannot state; Hypothesis draws the same few keys ("0") again and
again. A key the schema allows becomes a fresh one, so each request still goes the keyed way;
a key it forbids is left for the API to refuse.
"""

import uuid
from typing import Any

import schemathesis

KEY = "Idempotency-Key"
MAX_KEY_LENGTH = 255


@schemathesis.hook
def before_call(context: Any, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    key = (case.headers or {}).get(KEY)
    if isinstance(key, str) and 1 <= len(key) <= MAX_KEY_LENGTH:
        case.headers[KEY] = str(uuid.uuid4())
