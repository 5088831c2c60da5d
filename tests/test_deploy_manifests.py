"""The Kubernetes manifests (deploy/kubernetes) and systemd units (deploy/systemd),
checked offline: `kubectl kustomize` renders the base and every overlay; the rendered
core objects are validated against Kubernetes' own schemas (kubernetes-validate, which
ships them), KEDA's ScaledObject against KEDA's CRD schema (tests/data), and the facts
the manifests promise are asserted on what kustomize renders; `systemd-analyze verify`
checks the units. No cluster and no systemd as PID 1 are needed; without kubectl or
systemd-analyze these tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from hpo import defaults
from tests.conftest import missing_service

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
KEDA_CRD = Path(__file__).parent / "data" / "keda-2.16.1-scaledobjects-crd.yaml"
# A version kubernetes-validate ships schemas for (1.25 to 1.37 in 1.37.0), and that of
# the kubectl these tests render with; the manifests use nothing newer than 1.25's API.
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ["cpu", "gpu", "rabbitmq"]
# What the tests write into secrets.env: it must reach the Secret and nothing else.
PASSWORD = "Pw4testOnly9"
PREFIX, SUFFIX = "team-", "-x"

Doc = dict[str, Any]


# ----- rendering ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        missing_service("kubectl (for `kubectl kustomize`)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/kubernetes copied aside, with the secrets files a user makes from the
    examples, and one more overlay that renames everything (namePrefix, nameSuffix)."""
    tree = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(KUBERNETES, tree, ignore=shutil.ignore_patterns("secrets.env",
                                                                     "rabbitmq.env"))
    for example in tree.rglob("*.env.example"):
        text = example.read_text().replace("CHANGE_ME", PASSWORD)
        example.with_name(example.name.removesuffix(".example")).write_text(text)
    renamed = tree / "overlays" / "renamed"
    renamed.mkdir()
    (renamed / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["../cpu"], "namePrefix": PREFIX, "nameSuffix": SUFFIX}))
    return tree


@pytest.fixture(scope="module")
def rendered(kubectl: str, tree: Path) -> dict[str, list[Doc]]:
    """Every kustomization's objects, rendered once: base, cpu, gpu, rabbitmq, renamed."""
    out = {}
    for name in ["base", *OVERLAYS, "renamed"]:
        folder = tree / "base" if name == "base" else tree / "overlays" / name
        result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"kustomize {name}: {result.stderr}"
        out[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def agent_container(docs: list[Doc], name: str = "hpo-agent") -> Doc:
    spec = one(docs, "Deployment", name)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "agent")


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def gpu_count(spec: str) -> int:
    """How many GPUs an --gpus list names: 0,1 or 0-3."""
    count = 0
    for part in spec.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


# ----- schemas ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_core_objects_match_the_kubernetes_schema(rendered: dict[str, list[Doc]],
                                                  name: str) -> None:
    # Given every object kustomize renders that Kubernetes itself defines
    core = [d for d in rendered[name] if "." not in d["apiVersion"].split("/")[0]]
    assert {d["kind"] for d in core} >= {"Deployment", "Service", "Secret", "Job"}
    # Then each one is valid, strictly: an unknown field (a typo) is an error too
    for doc in core:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")


def strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it with strict field validation (kubectl's
    default): an object's fields not in its properties are errors, not pruned."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def scaled_object_schema() -> Doc:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return strict(version["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("name", ["base", *OVERLAYS, "renamed"])
def test_scaled_objects_match_kedas_crd_schema(rendered: dict[str, list[Doc]],
                                               scaled_object_schema: Doc,
                                               name: str) -> None:
    scaled = find(rendered[name], "ScaledObject")
    assert scaled
    for doc in scaled:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        jsonschema.validate(doc, scaled_object_schema)


def test_the_strict_crd_schema_catches_a_misspelt_field(scaled_object_schema: Doc) -> None:
    # The schema check above is worth something only if it rejects a typo.
    doc = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
           "metadata": {"name": "x"},
           "spec": {"scaleTargetRef": {"name": "x"}, "cooldownPeriods": 300,
                    "triggers": [{"type": "redis", "metadata": {}}]}}
    with pytest.raises(jsonschema.ValidationError, match="cooldownPeriods"):
        jsonschema.validate(doc, scaled_object_schema)


# ----- the agents' shutdown -----------------------------------------------------------

# What the agent may still do after --shutdown-timeout and --grace, each step bounded in
# hpo/defaults.py: wait for the killed processes (twice), drain stdout and stderr, write
# the last reports. The re-queue's own writes come on top; the manifests add a margin.
AGENT_TAIL_S = (2 * defaults.KILL_WAIT_S + 2 * defaults.OUTPUT_DRAIN_S
                + defaults.RECORDER_CLOSE_TIMEOUT_S)


@pytest.mark.parametrize("name", OVERLAYS)
def test_agents_get_time_to_finish_or_requeue_their_task(rendered: dict[str, list[Doc]],
                                                         name: str) -> None:
    deployment = one(rendered[name], "Deployment", "hpo-agent")
    args = agent_container(rendered[name])["args"]
    # The agent's timeouts are set in the manifest, not left to its defaults ...
    shutdown_s, grace_s = flag(args, "--shutdown-timeout"), flag(args, "--grace")
    assert shutdown_s is not None and grace_s is not None, args
    # ... and the kubelet waits for all of it before its SIGKILL
    period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert period >= float(shutdown_s) + float(grace_s) + AGENT_TAIL_S
    # Replicas are KEDA's to set: a re-apply must not reset them
    assert "replicas" not in deployment["spec"]


# ----- GPUs ---------------------------------------------------------------------------

def test_gpu_agents_ask_for_the_gpus_they_use(rendered: dict[str, list[Doc]]) -> None:
    agent = agent_container(rendered["gpu"])
    gpus = flag(agent["args"], "--gpus")
    assert gpus is not None and "--cpu-only" not in agent["args"]
    assert agent["resources"]["limits"]["nvidia.com/gpu"] == gpu_count(gpus)


@pytest.mark.parametrize("name", ["cpu", "rabbitmq"])
def test_cpu_agents_ask_for_no_gpu(rendered: dict[str, list[Doc]], name: str) -> None:
    agent = agent_container(rendered[name])
    assert "--cpu-only" in agent["args"] and "--gpus" not in agent["args"]
    assert "nvidia.com/gpu" not in agent["resources"].get("limits", {})


# ----- KEDA ---------------------------------------------------------------------------

def triggers(docs: list[Doc]) -> dict[str, Doc]:
    return {t["type"]: t for t in one(docs, "ScaledObject")["spec"]["triggers"]}


@pytest.mark.parametrize("name", OVERLAYS)
def test_agents_scale_to_zero_but_never_while_a_task_waits_or_runs(
        rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    spec = one(docs, "ScaledObject")["spec"]
    queue = flag(agent_container(docs)["args"], "--queue")
    assert spec["scaleTargetRef"]["name"] == "hpo-agent"
    assert spec["minReplicaCount"] == 0
    assert spec["maxReplicaCount"] >= 1
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] > 0
    # The store's count of the queue's queued and running tasks keeps a busy agent: the
    # broker's queue length counts waiting tasks only
    store = triggers(docs)["postgresql"]["metadata"]
    assert f"queue = '{queue}'" in store["query"]
    assert "'queued'" in store["query"] and "'running'" in store["query"]


def test_redis_trigger_watches_the_agents_queue_list(rendered: dict[str, list[Doc]]) -> None:
    for name in ("cpu", "gpu"):
        docs = rendered[name]
        metadata = triggers(docs)["redis"]["metadata"]
        # kombu keeps a queue's messages in a list named after it (no priority is used)
        assert metadata["listName"] == flag(agent_container(docs)["args"], "--queue")
        assert float(metadata["listLength"]) >= 1
        assert "rabbitmq" not in triggers(docs)


def test_rabbitmq_overlay_scales_on_the_rabbitmq_queue(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["rabbitmq"]
    by_type = triggers(docs)
    metadata = by_type["rabbitmq"]["metadata"]
    assert metadata["queueName"] == flag(agent_container(docs)["args"], "--queue")
    assert metadata["mode"] == "QueueLength" and float(metadata["value"]) >= 1
    assert "redis" not in by_type
    # No Redis left behind, and KEDA finds RabbitMQ through the broker URL's Secret key
    assert not find(docs, "Deployment", "redis") and not find(docs, "Service", "redis")
    auth = one(docs, "TriggerAuthentication", by_type["rabbitmq"]["authenticationRef"]["name"])
    assert {(r["parameter"], r["key"]) for r in auth["spec"]["secretTargetRef"]} == {
        ("host", "broker-url")}
    secret = one(docs, "Secret")
    assert {"broker-url", "rabbitmq-password", "store-url"} <= set(secret["data"])


def test_keda_references_follow_a_name_prefix_and_suffix(
        rendered: dict[str, list[Doc]]) -> None:
    # Given an overlay that renames every object (namePrefix, nameSuffix)
    docs = rendered["renamed"]
    deployment = one(docs, "Deployment", f"{PREFIX}hpo-agent{SUFFIX}")
    scaled = one(docs, "ScaledObject")
    # Then the ScaledObject scales the renamed Deployment ...
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # ... authenticates through the renamed TriggerAuthentications ...
    auth_names = {d["metadata"]["name"] for d in find(docs, "TriggerAuthentication")}
    refs = {t["authenticationRef"]["name"] for t in scaled["spec"]["triggers"]}
    assert refs and refs <= auth_names and all(n.startswith(PREFIX) for n in refs)
    # ... which read the Secret by its generated name (prefix, suffix and hash)
    secret = one(docs, "Secret")["metadata"]["name"]
    assert secret.startswith(f"{PREFIX}hpo-secrets{SUFFIX}-")
    for auth in find(docs, "TriggerAuthentication"):
        assert {r["name"] for r in auth["spec"]["secretTargetRef"]} == {secret}


# ----- secrets ------------------------------------------------------------------------

def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_passwords_stay_in_the_secret(rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    # No object but the Secret holds the password in any field (env values, args,
    # commands, probes, KEDA's trigger metadata)
    for doc in docs:
        if doc["kind"] != "Secret":
            assert not [s for s in strings(doc) if PASSWORD in s], \
                f"{doc['kind']} {doc['metadata']['name']}"
    for pod, spec in pod_specs(docs):
        for container in spec["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            # No URL and no secret in the environment: files only
            assert "HPO_STORE_URL" not in env and "HPO_BROKER_URL" not in env, pod
            assert not [e for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})]
            # Each *_URL_FILE names a file a mounted Secret volume projects
            mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
            files = {f"{mounts[v['name']]}/{item['path']}"
                     for v in spec.get("volumes", []) if "secret" in v and v["name"] in mounts
                     for item in v["secret"].get("items", [])}
            for variable in [v for v in env if v.startswith("HPO_") and v.endswith("_FILE")]:
                assert env[variable]["value"] in files, (pod, variable)


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_hpo_process_gets_the_urls_as_files(rendered: dict[str, list[Doc]],
                                                  name: str) -> None:
    docs = rendered[name]
    needs = {"hpo-agent": {"HPO_STORE_URL_FILE", "HPO_BROKER_URL_FILE"},
             "hpo-controller": {"HPO_STORE_URL_FILE", "HPO_BROKER_URL_FILE"},
             "hpo-ui": {"HPO_STORE_URL_FILE", "HPO_UI_TOKEN_FILE"}}
    specs = dict(pod_specs(docs))
    for workload, variables in needs.items():
        env = {e["name"] for c in specs[workload]["containers"] for e in c.get("env", [])}
        assert variables <= env, workload


# ----- the other pieces ---------------------------------------------------------------

@pytest.mark.parametrize("name", OVERLAYS)
def test_controller_job_ui_service_and_shared_checkpoints(rendered: dict[str, list[Doc]],
                                                          name: str) -> None:
    docs = rendered[name]
    # The controller runs once: a retry would start a second optimization
    job = one(docs, "Job", "hpo-controller")
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:2] == [
        "hpo-controller", "start"]
    # The ui: a Deployment behind a Service on its port
    ui = one(docs, "Deployment", "hpo-ui")
    service = one(docs, "Service", "hpo-ui")
    assert service["spec"]["selector"].items() <= \
        ui["spec"]["template"]["metadata"]["labels"].items()
    container = ui["spec"]["template"]["spec"]["containers"][0]
    assert flag(container["args"], "--host") == "0.0.0.0"
    assert int(flag(container["args"], "--port") or 0) in {
        p["containerPort"] for p in container["ports"]}
    # Checkpoints: one volume every agent mounts, whichever node it runs on
    claim = one(docs, "PersistentVolumeClaim", "hpo-checkpoints")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    agent = agent_container(docs)
    root = {e["name"]: e.get("value") for e in agent["env"]}["HPO_CHECKPOINT_ROOT"]
    assert root in {m["mountPath"] for m in agent["volumeMounts"]}


@pytest.mark.parametrize("name", OVERLAYS)
def test_pods_run_as_non_root_on_a_read_only_root(rendered: dict[str, list[Doc]],
                                                  name: str) -> None:
    for pod, spec in pod_specs(rendered[name]):
        assert spec["securityContext"]["runAsNonRoot"] is True, pod
        assert spec["automountServiceAccountToken"] is False, pod
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, pod
            assert context["allowPrivilegeEscalation"] is False, pod
            assert container["resources"]["requests"], pod
            assert container["resources"]["limits"]["memory"], pod


def test_images_come_from_the_kustomize_images_entry(rendered: dict[str, list[Doc]]) -> None:
    for name, tag in [("cpu", "hpo:0.1.0"), ("gpu", "hpo:0.1.0-cuda")]:
        images = {c["image"] for _pod, spec in pod_specs(rendered[name])
                  for c in spec["containers"]}
        assert tag in images and "hpo" not in images, name


def test_agent_liveness_probe_finds_a_running_agent_and_not_a_stopped_one(
        rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    # The probe's own program, run here against a stand-in "hpo-agent" process
    command = agent_container(rendered["cpu"])["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["python3", "-c"]
    probe = [shutil.which("python3") or "python3", *command[1:]]
    stand_in = tmp_path / "hpo-agent"
    stand_in.write_text("import time\ntime.sleep(60)\n")
    process = subprocess.Popen(["python3", str(stand_in)])
    try:
        assert subprocess.run(probe, timeout=30).returncode == 0
        process.send_signal(signal.SIGSTOP)  # the agent is there but frozen
        os.waitpid(process.pid, os.WUNTRACED)  # returns once it is stopped
        assert subprocess.run(probe, timeout=30).returncode == 1
    finally:
        process.kill()
        process.wait()


# ----- systemd ------------------------------------------------------------------------

UNITS = ["hpo-agent@.service", "hpo-controller.service", "hpo-ui.service"]


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        missing_service("systemd-analyze (for `systemd-analyze verify`)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units with /opt/hpo/bin replaced by a folder holding this test run's own hpo
    commands: verify fails on an ExecStart whose program does not exist."""
    folder = tmp_path_factory.mktemp("units")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    scripts = Path(sysconfig.get_path("scripts"))  # this interpreter's console scripts
    for command in ("hpo", "hpo-agent", "hpo-controller"):
        assert (scripts / command).exists(), f"{command} is not installed"
        (bin_dir / command).symlink_to(scripts / command)
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text()
        assert "/opt/hpo/bin/" in text
        (folder / unit).write_text(text.replace("/opt/hpo/bin/", f"{bin_dir}/"))
    return folder


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_verify_clean(systemd_analyze: str, unit_dir: Path, unit: str) -> None:
    result = subprocess.run([systemd_analyze, "verify", str(unit_dir / unit)],
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on an unknown key or a bad value and only says so: any line about
    # the unit is a failure.
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if unit.split("@")[0] in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def unit_settings(unit: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (SYSTEMD / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_agent_unit_stops_the_agent_gently_and_waits_for_it() -> None:
    settings = unit_settings("hpo-agent@.service")
    args = settings["ExecStart"][0].split()
    assert flag(args, "--gpus") == "%I"  # the instance name, unescaped
    assert settings["KillMode"] == ["mixed"] and settings["KillSignal"] == ["SIGTERM"]
    assert settings["Restart"] == ["on-failure"]
    stop_s = float(settings["TimeoutStopSec"][0])
    assert stop_s >= float(flag(args, "--shutdown-timeout") or "inf") + float(
        flag(args, "--grace") or "inf") + AGENT_TAIL_S
    # The GPUs stay reachable, and the URLs come as credentials, not environment values
    assert "PrivateDevices" not in settings and "DevicePolicy" not in settings
    assert "MemoryDenyWriteExecute" not in settings  # JIT compilers need it off
    assert {c.split(":")[0] for c in settings["LoadCredential"]} == {"store-url",
                                                                     "broker-url"}


def test_units_take_secrets_as_credentials_only() -> None:
    for unit, wanted in [("hpo-agent@.service", {"store-url", "broker-url"}),
                         ("hpo-controller.service", {"store-url", "broker-url"}),
                         ("hpo-ui.service", {"store-url", "ui-token"})]:
        settings = unit_settings(unit)
        assert {c.split(":")[0] for c in settings["LoadCredential"]} == wanted, unit
        environment = " ".join(settings["Environment"])
        for variable in ("HPO_STORE_URL", "HPO_BROKER_URL", "HPO_UI_TOKEN"):
            assert f"{variable}=" not in environment, unit  # only the *_FILE forms
        assert "HPO_STORE_URL_FILE=%d/store-url" in environment, unit


@pytest.mark.parametrize("unit", UNITS)
def test_every_variable_a_unit_uses_is_set_in_hpo_env(unit: str) -> None:
    env_file = {line.partition("=")[0] for line in (SYSTEMD / "hpo.env").read_text()
                .splitlines() if "=" in line and not line.lstrip().startswith("#")}
    used = set(re.findall(r"\$\{?([A-Z_]+)\}?", " ".join(unit_settings(unit)["ExecStart"])))
    assert used <= env_file, used - env_file
    # and no URL there: the URLs (with their passwords) are credentials
    assert "://" not in (SYSTEMD / "hpo.env").read_text()
