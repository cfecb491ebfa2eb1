"""Hooks of scripts/schemathesis.

An Idempotency-Key names one request: the example app answers a second, different request with a
key it has seen with 422 `idempotency_key_reused`, as the IETF draft says. Schemathesis draws keys
from the schema and so repeats them ("0", "00"...); each valid key is made unique before the call,
so that the check of valid requests sees what a client that follows the draft would. Invalid keys
are left as drawn: their 400 is part of the contract under test.
"""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.match(key):
        case.headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4()}"
