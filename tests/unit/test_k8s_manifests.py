"""The Kubernetes manifests keep the shape ops rely on: probes, resources, secure defaults, named ports."""
import json
import pathlib

import pytest
import yaml

from common.topology import SERVICES

K8S = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def documents():
    for path in sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def deployments():
    return [(p, d) for p, d in documents() if d["kind"] == "Deployment"]


def test_every_service_has_a_deployment_service_and_account():
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in documents()}
    for name in SERVICES:
        assert {("Deployment", name), ("Service", name), ("ServiceAccount", name)} <= kinds, name


@pytest.mark.parametrize("path, deployment", deployments(), ids=lambda v: getattr(v, "name", None) or "")
def test_deployments_have_probes_resources_and_secure_defaults(path, deployment):
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    for c in spec["containers"]:
        assert c["readinessProbe"] and c["livenessProbe"], c["name"]
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert [p["name"] for p in c["ports"]] == ["http"]


def test_kustomizations_list_files_that_exist():
    for path in K8S.rglob("kustomization.yaml"):
        doc = yaml.safe_load(path.read_text())
        for ref in doc.get("resources", []) + doc.get("components", []):
            assert (path.parent / ref).exists(), f"{path}: {ref}"
        for gen in doc.get("configMapGenerator", []):
            for f in gen["files"]:
                assert json.loads((path.parent / f).read_text())["panels"], f
