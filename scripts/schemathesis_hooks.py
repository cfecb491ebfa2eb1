"""Hooks of scripts/schemathesis.

An Idempotency-Key names one request: the example app answers a second, different request with a
key it has seen with 422 `idempotency_key_reused`, as the IETF draft says. Schemathesis draws keys
from the schema and so repeats them ("0", "00"...); each valid key is made unique before the call,
so that the check of valid requests sees what a client that follows the draft would. Invalid keys
are left as drawn: their 400 is part of the contract under test.

A drawn SKU has no stock, so every order would be refused (409) and `GET /orders/{id}` would only
ever answer 404. In the signed-in run (`SCHEMATHESIS_STOCK_URL` set), half the SKUs of valid
orders, chosen by their checksum, are stocked first, so that those orders are placed and the
stateful phase reads them back; the other half keep the 409.
"""

import json
import os
import re
import urllib.request
import uuid
import zlib

import schemathesis

VALID_KEY = re.compile(r"[!-~]{1,255}")
VALID_SKU = re.compile(r"[A-Za-z0-9_-]{1,32}")
# More than the orders of a run can take.
STOCK = 1_000_000_000
# The SKUs stocked so far: once each is enough.
stocked = set()


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    unique_idempotency_key(case)
    if case.method.upper() == "POST" and case.path == "/orders":
        stock_half_the_skus(case.body)


def unique_idempotency_key(case):
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.fullmatch(key):
        case.headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4()}"


def stock_half_the_skus(order):
    url = os.environ.get("SCHEMATHESIS_STOCK_URL")
    sku = order.get("sku") if isinstance(order, dict) else None
    if not url or not isinstance(sku, str) or not VALID_SKU.fullmatch(sku):
        return
    if zlib.crc32(sku.encode()) % 2 or sku in stocked:
        return
    request = urllib.request.Request(
        f"{url}/{sku}",
        data=json.dumps({"qty": STOCK}).encode(),
        method="PUT",
        headers={
            "Content-Type": "application/json",
            "Cookie": f"cohort_session={os.environ['SCHEMATHESIS_SESSION']}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"PUT /stock/{sku} answered {response.status}")
    stocked.add(sku)
