"""The OpenAPI document, built by apispec from the route registry and marshmallow schemas."""
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from gateway import schemas
from gateway.api import ROUTES


def build():
    import gateway.service  # noqa: F401  (its route declarations fill ROUTES)

    spec = APISpec(title="IDSync Cloud Billing Studio API", version="1.0.0", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Every call is scoped to the caller's tenant. Authenticate with "
                                        "`Authorization: Bearer <token>` (tokens from POST /api/v1/tokens)."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", schema=schemas.Error)
    paths = {}
    for r in ROUTES:
        if not r["url"].startswith("/api/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r["url"])
        op = {"summary": r["summary"], "tags": r["tags"],
              "responses": {"200": {"description": "OK"},
                            "400": {"description": "invalid request", "content": {"application/json": {"schema": "Error"}}},
                            "401": {"description": "not signed in", "content": {"application/json": {"schema": "Error"}}},
                            "404": {"description": "not found in your tenant",
                                    "content": {"application/json": {"schema": "Error"}}}}}
        if r["capability"]:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Needs a role with the `{r['capability']}` capability."
        if r["response"] is not None:
            op["responses"]["200"]["content"] = {"application/json": {"schema": r["response"]}}
        if r["body"] is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r["body"]}}}
        params = re.findall(r"\{(\w+)\}", path)
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
        for method in r["method"].split(","):
            paths.setdefault(path, {})[method.lower()] = op
    for path, ops in sorted(paths.items()):
        spec.path(path=path, operations=ops)
    return spec.to_dict()
