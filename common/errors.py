"""Errors a service raises across RPC. nameko sends the class name; the gateway maps it to a status
(gateway/errors.py REMOTE_ERRORS), so the names here are the contract."""


class NotFound(Exception):
    """No such object in the caller's tenant (another tenant's object is 'not found' too)."""


class BadRequest(Exception):
    """The request cannot be carried out as asked; the message says why."""


class Conflict(Exception):
    """The object's state does not allow this (e.g. approving a decided approval)."""


class VendorUnavailable(Exception):
    """The outside vendor did not answer usefully (throttled, down, timing out)."""
