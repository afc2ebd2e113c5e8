"""In-memory data of the simulated Ingram Micro Cloud Marketplace.

Pure data and rules, no Flask. Callers hold the kit lock around every call.
Money is kept as Decimal and formatted on output (see Market.money).
Listing is "newest first": subscriptions by (creationDate, id) descending, customers
and products by id descending. Sorted id lists are built once per data version and
filtered lists are cached per filter, so paging through 50k lines costs O(limit) a page.

Accounts: every credential and customer belongs to one reseller account ("default" unless
named); a subscription belongs to its customer's account. The vendor API shows a credential
only its own account's customers and subscriptions; the product catalogue is shared. Each
account has its own data version, so a change in one account keeps the others' caches.
"""
from __future__ import annotations

import collections
import datetime as dt
import secrets
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

STATUSES = ("pending", "active", "hold", "terminated", "removed")
SUMMARY_FIELDS = ("id", "customerId", "status", "renewalStatus", "creationDate", "renewalDate",
                  "lastModifiedDate")
LINE_FIELDS = ("mpn", "name", "quantity", "unitPrice", "extendedPrice")
ID_BASE = {"customer": 1000001, "product": 3000001, "subscription": 5000001}
CENT = Decimal("0.01")
DEFAULT_ACCOUNT = "default"
_PRODUCTS = None  # the version key of the shared catalogue (accounts are strings)
_FILTER_CACHE_SIZE = 2048


class SimError(Exception):
    """A request the marketplace would refuse; status is the HTTP code to send."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --- small value helpers ------------------------------------------------------
def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_dt(value: str, end_of_day: bool = False) -> dt.datetime:
    """ISO date or datetime; a bare date means the start (or end) of that UTC day."""
    text = str(value).strip()
    if len(text) == 10:
        day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
        return day + dt.timedelta(days=1, seconds=-1) if end_of_day else day
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc).replace(microsecond=0)


def norm_dt(value) -> str:
    try:
        return iso(parse_dt(value))
    except (TypeError, ValueError) as exc:
        raise SimError(400, f"invalid date: {value!r}") from exc


def dec(value) -> Decimal:
    try:
        result = Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError) as exc:
        raise SimError(400, f"invalid amount: {value!r}") from exc
    if not result.is_finite():
        raise SimError(400, f"invalid amount: {value!r}")
    return result


def add_months(value: dt.datetime, months: int) -> dt.datetime:
    month0 = value.month - 1 + months
    year, month = value.year + month0 // 12, month0 % 12 + 1
    for day in (value.day, 30, 29, 28):  # clamp e.g. Jan 31 + 1 month -> Feb 28
        try:
            return value.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def next_renewal(created: dt.datetime, period: dict | None, after: dt.datetime) -> dt.datetime:
    """First anniversary of `created` (by subscription period) strictly after `after`."""
    step = 12 if not period or period.get("type") == "year" else 1
    step *= int((period or {}).get("duration") or 1)
    n = step
    if after > created:  # jump near the answer instead of looping month by month
        months = (after.year - created.year) * 12 + after.month - created.month
        n = max(step, (months // step) * step)
    renewal = add_months(created, n)
    while renewal <= after:
        n += step
        renewal = add_months(created, n)
    return renewal


def _id_key(record_id: str):
    # numeric-looking ids sort numerically ("999" < "1000"), others by text
    return (len(record_id), record_id)


def account_name(value, default: str = DEFAULT_ACCOUNT) -> str:
    """An account name from a request: missing or empty -> default; anything but text -> 400."""
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise SimError(400, "account must be a string")
    return value


def _valid_quantity(value, what: str = "quantity") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SimError(400, f"{what} must be an integer >= 0")
    return value


def _require(doc: dict, field: str, what: str):
    if doc.get(field) in (None, ""):
        raise SimError(400, f"{what}: '{field}' is required")
    return doc[field]


class Market:
    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.credentials: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}
        self.customers: dict[str, dict] = {}
        self.products: dict[str, dict] = {}
        self.by_mpn: dict[str, str] = {}
        self.subs: dict[str, dict] = {}
        self.by_customer: dict[str, list[str]] = collections.defaultdict(list)
        self.by_account: dict[str, dict[str, None]] = collections.defaultdict(dict)  # account -> customer ids
        self._versions: collections.Counter = collections.Counter()  # account (or _PRODUCTS) -> version
        self._sorted: dict[tuple, tuple[int, list[str]]] = {}
        self._filtered: collections.OrderedDict = collections.OrderedDict()
        self._next = dict(ID_BASE)

    def _changed(self, account: str | None = _PRODUCTS) -> None:
        self._versions[account] += 1

    def account_of(self, sub: dict) -> str:
        return self.customers[sub["customerId"]]["account"]

    def _new_id(self, kind: str) -> str:
        value = str(self._next[kind])
        self._next[kind] += 1
        return value

    def _note_id(self, kind: str, record_id: str) -> None:
        if record_id.isdigit():
            self._next[kind] = max(self._next[kind], int(record_id) + 1)

    def next_ids(self) -> dict:
        return dict(self._next)

    # --- credentials and tokens -------------------------------------------------
    def add_credential(self, doc: dict) -> dict:
        cred = {"user": str(_require(doc, "user", "credential")),
                "password": str(_require(doc, "password", "credential")),
                "subscription_key": str(_require(doc, "subscription_key", "credential")),
                "marketplace": str(doc.get("marketplace") or "us"),
                "account": account_name(doc.get("account"))}
        self.credentials[cred["user"]] = cred
        return cred

    def issue_token(self, user: str, password: str, key: str, marketplace: str | None,
                    ttl: float, now: float) -> str:
        cred = self.credentials.get(user)
        if cred is None or not secrets.compare_digest(cred["password"], password or ""):
            raise SimError(401, "Invalid username or password")
        if not key or not secrets.compare_digest(cred["subscription_key"], key):
            raise SimError(401, "Access denied due to invalid subscription key")
        if not marketplace:
            raise SimError(400, "marketplace is required")
        if marketplace.lower() != cred["marketplace"].lower():
            raise SimError(401, f"User is not allowed to access marketplace {marketplace}")
        token = secrets.token_urlsafe(32)
        self.tokens[token] = {"user": user, "expires": now + ttl}
        if len(self.tokens) > 10000:  # forget expired tokens now and then
            self.tokens = {t: v for t, v in self.tokens.items() if v["expires"] > now}
        return token

    def check_token(self, token: str | None, key: str | None, now: float) -> dict:
        if not key:
            raise SimError(401, "Access denied due to missing subscription key")
        if not token:
            raise SimError(401, "Full authentication is required to access this resource")
        entry = self.tokens.get(token)
        if entry is None:
            raise SimError(401, "Invalid access token")
        if entry["expires"] <= now:
            raise SimError(401, "Access token expired")
        cred = self.credentials.get(entry["user"])
        if cred is None or not secrets.compare_digest(cred["subscription_key"], key):
            raise SimError(401, "Access denied due to invalid subscription key")
        return cred

    # --- customers ----------------------------------------------------------------
    def add_customer(self, doc: dict) -> dict:
        """Upsert a customer. Without `account` a new customer joins "default" and an existing
        one keeps its account; a different account moves it (and its subscriptions)."""
        old = self.customers.get(str(doc.get("id") or ""))
        account = account_name(doc.get("account"), old["account"] if old else DEFAULT_ACCOUNT)
        cid = str(doc.get("id") or self._new_id("customer"))
        self._note_id("customer", cid)
        cust = {"id": cid, "externalId": doc.get("externalId"),
                "name": str(doc.get("name") or f"Customer {cid}"),
                "status": str(doc.get("status") or "active")}
        if doc.get("domain"):
            cust["domain"] = str(doc["domain"])
        cust["account"] = account
        if old and old["account"] != account:
            self.by_account[old["account"]].pop(cid, None)
            self._changed(old["account"])
        self.customers[cid] = cust
        self.by_account[account][cid] = None
        self._changed(account)
        return cust

    # --- products -----------------------------------------------------------------
    def add_product(self, doc: dict) -> dict:
        mpn = str(_require(doc, "mpn", "product"))
        pid = str(doc.get("id") or self.by_mpn.get(mpn) or self._new_id("product"))
        self._note_id("product", pid)
        price = dec(doc.get("unitPrice", "10.00"))
        cost = dec(doc["unitCost"]) if doc.get("unitCost") is not None else dec(price * Decimal("0.85"))

        def amounts(items, default):
            if not items:
                return [{"currency": "USD", "amount": default}]
            return [{"currency": str(i.get("currency") or "USD"), "amount": dec(i.get("amount", default))}
                    for i in items]

        product = {
            "id": pid, "mpn": mpn, "vendor": str(doc.get("vendor") or "Microsoft"),
            "name": str(doc.get("name") or mpn), "serviceName": str(doc.get("serviceName") or "Microsoft 365"),
            "minimumQuantity": int(doc.get("minimumQuantity", 1)),
            "maximumQuantity": int(doc.get("maximumQuantity", 10000)),
            "unitPrice": price, "unitCost": cost,
            "prices": amounts(doc.get("prices"), price), "costs": amounts(doc.get("costs"), cost),
            "billingPeriod": dict(doc.get("billingPeriod") or {"type": "month", "duration": 1}),
            "subscriptionPeriod": dict(doc.get("subscriptionPeriod") or {"type": "year", "duration": 1}),
            "billingModel": str(doc.get("billingModel") or "prepaid"),
        }
        old = self.products.get(pid)
        if old and old["mpn"] != mpn:
            self.by_mpn.pop(old["mpn"], None)
        self.products[pid] = product
        self.by_mpn[mpn] = pid
        self._changed()
        return product

    def product_for(self, mpn: str, name: str | None = None) -> dict:
        """The product with this MPN; unknown MPNs get a default product (seed convenience)."""
        pid = self.by_mpn.get(mpn)
        return self.products[pid] if pid else self.add_product({"mpn": mpn, "name": name})

    # --- subscriptions ------------------------------------------------------------
    def _make_line(self, doc: dict) -> dict:
        mpn = str(_require(doc, "mpn", "line"))
        quantity = _valid_quantity(doc.get("quantity", 1), f"line {mpn}: quantity")
        price = dec(doc["unitPrice"]) if doc.get("unitPrice") is not None else None
        product = self.product_for(mpn, doc.get("name"))  # only once the line is valid
        return {"mpn": mpn, "name": str(doc.get("name") or product["name"]), "quantity": quantity,
                "unitPrice": product["unitPrice"] if price is None else price}

    def add_subscription(self, doc: dict, now: dt.datetime | None = None) -> dict:
        now = now or utcnow()
        cust_id = str(_require(doc, "customerId", "subscription"))
        if cust_id not in self.customers:
            raise SimError(400, f"unknown customerId {cust_id}")
        status = str(doc.get("status") or "active")
        if status not in STATUSES:
            raise SimError(400, f"status must be one of {STATUSES}")
        lines = [self._make_line(line) for line in doc.get("lines") or []]
        if len({line["mpn"] for line in lines}) != len(lines):
            raise SimError(400, "one line per MPN")
        sid = str(doc.get("id") or self._new_id("subscription"))
        if sid in self.subs and self.subs[sid]["customerId"] != cust_id:
            self.by_customer[self.subs[sid]["customerId"]].remove(sid)
            self._changed(self.account_of(self.subs[sid]))
        self._note_id("subscription", sid)
        created = parse_dt(norm_dt(doc["creationDate"])) if doc.get("creationDate") else now
        if doc.get("renewalDate"):
            renewal = norm_dt(doc["renewalDate"])
        else:
            period = self.products[self.by_mpn[lines[0]["mpn"]]]["subscriptionPeriod"] if lines else None
            renewal = iso(next_renewal(created, period, max(now, created)))
        sub = {
            "id": sid, "customerId": cust_id, "status": status,
            "renewalStatus": str(doc.get("renewalStatus")
                                 or ("off" if status in ("terminated", "removed") else "on")),
            "creationDate": iso(created), "renewalDate": renewal,
            "lastModifiedDate": norm_dt(doc["lastModifiedDate"]) if doc.get("lastModifiedDate") else iso(created),
            "lines": lines, "corrupt": {"set": {}, "drop": []},
        }
        if sid not in self.subs or self.subs[sid]["customerId"] != cust_id:
            self.by_customer[cust_id].append(sid)
        self.subs[sid] = sub
        self._changed(self.customers[cust_id]["account"])
        return sub

    def get_subscription(self, sid: str, account: str | None = None) -> dict:
        """The subscription; with an account, another account's subscription is as unknown."""
        sub = self.subs.get(sid)
        if sub is None or (account is not None and self.account_of(sub) != account):
            raise SimError(404, f"Subscription {sid} not found")
        return sub

    def change_subscription(self, sid: str, doc: dict, now: str | None = None) -> dict:
        """What an order (change/renewal) does: edit one line or status, bump lastModifiedDate.

        Everything is checked before anything changes: a refused change leaves the record as it was.
        """
        sub = self.get_subscription(sid)
        at = norm_dt(doc["at"]) if doc.get("at") else (now or iso(utcnow()))
        status = doc.get("status")
        if status is not None and status not in STATUSES:
            raise SimError(400, f"status must be one of {STATUSES}")
        line, new_line, quantity, price = None, None, None, None
        if any(doc.get(k) is not None for k in ("mpn", "quantity", "unitPrice")):
            mpn = doc.get("mpn")
            if mpn is None:
                if len(sub["lines"]) != 1:
                    raise SimError(400, "mpn is required when the subscription has several lines")
                mpn = sub["lines"][0]["mpn"]
            line = next((l for l in sub["lines"] if l["mpn"] == mpn), None)
            if line is None:
                new_line = self._make_line(doc)
            else:
                if doc.get("quantity") is not None:
                    quantity = _valid_quantity(doc["quantity"])
                if doc.get("unitPrice") is not None:
                    price = dec(doc["unitPrice"])
        if status is not None:
            sub["status"] = status
        if doc.get("renewalStatus") is not None:
            sub["renewalStatus"] = str(doc["renewalStatus"])
        if new_line is not None:
            sub["lines"].append(new_line)
        if quantity is not None:
            line["quantity"] = quantity
        if price is not None:
            line["unitPrice"] = price
        sub["lastModifiedDate"] = at
        self._changed(self.account_of(sub))
        return sub

    def change_many(self, changes, now: str | None = None) -> dict:
        """Apply a list of changes like change_subscription, each on its own: a refused entry is
        reported by its index and does not stop the others."""
        if not isinstance(changes, list):
            raise SimError(400, "'changes' must be a list")
        now = now or iso(utcnow())
        done, errors = 0, []
        for index, doc in enumerate(changes):
            sid = doc.get("id") if isinstance(doc, dict) else None
            try:
                if not isinstance(doc, dict):
                    raise SimError(400, "a change must be a JSON object")
                if sid in (None, ""):
                    raise SimError(400, "'id' is required")
                self.change_subscription(str(sid), doc, now)
                done += 1
            except SimError as exc:
                errors.append({"index": index, "id": sid, "status": exc.status, "message": exc.message})
        return {"changed": done, "errors": errors}

    def cancel_subscription(self, sid: str, doc: dict) -> dict:
        return self.change_subscription(sid, {"status": "terminated", "renewalStatus": "off",
                                              "at": doc.get("at")})

    def corrupt_subscription(self, sid: str, doc: dict) -> dict:
        sub = self.get_subscription(sid)
        if doc.get("clear"):
            sub["corrupt"] = {"set": {}, "drop": []}
        elif doc.get("drop_field"):
            sub["corrupt"]["drop"].append(str(doc["drop_field"]))
        elif doc.get("field"):
            sub["corrupt"]["set"][str(doc["field"])] = doc.get("value")
        else:
            raise SimError(400, "give field+value, drop_field or clear")
        return sub

    # --- listing ------------------------------------------------------------------
    def _newest_first(self, sids) -> list[str]:
        return sorted(sids, key=lambda s: (self.subs[s]["creationDate"], _id_key(s)), reverse=True)

    def _sorted_ids(self, kind: str, account: str = DEFAULT_ACCOUNT) -> list[str]:
        """Newest-first ids of one account's customers or subscriptions, or of all products."""
        scope = _PRODUCTS if kind == "products" else account
        version = self._versions[scope]
        cached = self._sorted.get((kind, scope))
        if cached and cached[0] == version:
            return cached[1]
        if kind == "subscriptions":
            ids = self._newest_first(self.account_subscription_ids(account))
        elif kind == "customers":
            ids = sorted(self.by_account.get(account, ()), key=_id_key, reverse=True)
        else:
            ids = sorted(self.products, key=_id_key, reverse=True)
        self._sorted[(kind, scope)] = (version, ids)
        return ids

    def account_subscription_ids(self, account: str) -> list[str]:
        return [sid for cid in self.by_account.get(account, ()) for sid in self.by_customer.get(cid, ())]

    def page(self, kind: str, offset: int, limit: int, account: str = DEFAULT_ACCOUNT) -> tuple[list[str], int]:
        ids = self._sorted_ids(kind, account)
        return ids[offset:offset + limit], len(ids)

    def subscription_ids(self, customer_id=None, statuses=None, date_from=None, date_to=None,
                         account: str = DEFAULT_ACCOUNT) -> list[str]:
        """Newest-first ids of the account's subscriptions matching the filters (dates as ISO
        strings, compared as text). Another account's customerId matches nothing."""
        if not any((customer_id, statuses, date_from, date_to)):
            return self._sorted_ids("subscriptions", account)
        version = self._versions[account]
        key = (account, customer_id, tuple(sorted(statuses or ())), date_from, date_to)
        cached = self._filtered.get(key)
        if cached and cached[0] == version:
            self._filtered.move_to_end(key)
            return cached[1]
        if customer_id is not None:
            mine = customer_id in self.by_account.get(account, ())
            base = self._newest_first(self.by_customer.get(customer_id, ())) if mine else []
        else:
            base = self._sorted_ids("subscriptions", account)
        out = []
        for sid in base:
            sub = self.subs[sid]
            if statuses and sub["status"] not in statuses:
                continue
            if date_from and sub["creationDate"] < date_from:
                continue
            if date_to and sub["creationDate"] > date_to:
                continue
            out.append(sid)
        self._filtered[key] = (version, out)
        self._filtered.move_to_end(key)
        while len(self._filtered) > _FILTER_CACHE_SIZE:  # bound the cache: least recently used go
            self._filtered.popitem(last=False)
        return out

    def line_count(self, account: str | None = None) -> int:
        subs = self.subs.values() if account is None else (self.subs[s] for s in self.account_subscription_ids(account))
        return sum(len(s["lines"]) for s in subs)

    # --- bulk load --------------------------------------------------------------------
    def load(self, doc: dict, now: dt.datetime | None = None) -> dict:
        """Upsert a seed document (credentials, customers, products, subscriptions).

        Not atomic: a bad record stops the load with SimError after the records before it.
        """
        if not isinstance(doc, dict):
            raise SimError(400, "seed document must be a JSON object")
        for section in ("credentials", "customers", "products", "subscriptions"):
            items = doc.get(section) or []
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise SimError(400, f"'{section}' must be a list of objects")
        now = now or utcnow()
        for cred in doc.get("credentials") or []:
            self.add_credential(cred)
        for cust in doc.get("customers") or []:
            self.add_customer(cust)
        for product in doc.get("products") or []:
            self.add_product(product)
        for sub in doc.get("subscriptions") or []:
            self.add_subscription(sub, now)
        return self.counts()

    def counts(self, account: str | None = None) -> dict:
        """Record counts: everything, or one account's (products are shared: all of them)."""
        if account is None:
            return {"credentials": len(self.credentials), "customers": len(self.customers),
                    "products": len(self.products), "subscriptions": len(self.subs),
                    "lines": self.line_count()}
        return {"credentials": sum(1 for c in self.credentials.values() if c["account"] == account),
                "customers": len(self.by_account.get(account, ())), "products": len(self.products),
                "subscriptions": len(self.account_subscription_ids(account)), "lines": self.line_count(account)}

    def accounts(self) -> list[str]:
        """Every account that has a credential or a customer, sorted."""
        return sorted({c["account"] for c in self.credentials.values()} | {a for a, ids in self.by_account.items() if ids})
