"""deploy/: the Kubernetes manifest against the Kubernetes API's own schemas (kubernetes-validate), and the
Dockerfile parsed by dockerfile-parse and held to the hadolint rules that apply to it."""
from __future__ import annotations

import copy
import shlex

import pytest
import yaml

from conftest import REPO

MANIFEST = REPO / "deploy" / "kubernetes" / "triton.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile.triton"
KUBERNETES = "1.30"  # a release every cluster of the last two years speaks


def _documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_manifest_is_valid_for_the_kubernetes_api():
    import kubernetes_validate

    docs = _documents()
    assert {d["kind"] for d in docs} == {"PersistentVolumeClaim", "Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # strict: unknown fields are errors too


@pytest.mark.parametrize("break_it", [
    lambda d: d["spec"].__setitem__("replicas", "three"),
    lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].__setitem__("containerPort", "http"),
    lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("readinesProbe", {}),
], ids=["replicas-not-a-number", "port-not-a-number", "misspelt-field"])
def test_the_validator_rejects_a_broken_deployment(break_it):
    import kubernetes_validate

    deployment = copy.deepcopy(next(d for d in _documents() if d["kind"] == "Deployment"))
    break_it(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_dockerfile_parses_and_follows_hadolint_rules():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    steps = [s for s in parser.structure if s["instruction"] != "COMMENT"]
    known = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
             "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
    assert steps and steps[0]["instruction"] == "FROM" and {s["instruction"] for s in steps} <= known
    image, _, tag = parser.baseimage.rpartition(":")
    assert image == "nvcr.io/nvidia/tritonserver" and tag.endswith("-py3") and tag != "latest"  # DL3007: pinned tag
    copies = [s["value"].split() for s in steps if s["instruction"] == "COPY"]
    assert all((REPO / src).exists() for *sources, _ in copies for src in sources)
    destinations = {dst for *_, dst in copies}
    for run in (s["value"] for s in steps if s["instruction"] == "RUN"):
        words = shlex.split(run)
        if "pip" in words and "install" in words:
            assert "--no-cache-dir" in words  # DL3042
            assert "numpy<2" in words  # the Python backend's stub needs numpy 1.x
            assert any(w.split("[")[0] in destinations for w in words), "pip installs the copied trtdeploy"
        if "apt-get" in words and "install" in words:
            assert "-y" in words and "--no-install-recommends" in words  # DL3014, DL3015
