"""Tests of the fluxadmit Helm chart (charts/fluxadmit).

Run: python3 -m unittest discover -s charts/tests -v
Needs: helm-python-sdk (Helm v4 embedded: lint, schema validation, offline render), PyYAML.
The CRD drift check and the end-to-end check run the fluxadmit binary
(target/debug/fluxadmit or target/release/fluxadmit, or $FLUXADMIT_BIN).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "fluxadmit"
RELEASE = "fluxadmit"
NAMESPACE = "flux-system"
SVC_DNS = [f"fluxadmit.{NAMESPACE}.svc", f"fluxadmit.{NAMESPACE}.svc.cluster.local"]
WORKLOAD_RESOURCES = {
    ("", "pods"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
}
READ_VERBS = ["get", "list", "watch"]
# The default policies need no workload validation webhook (their validating rules are on
# HelmReleases and Kustomizations); this opt-in example validates every workload everywhere,
# so with it all three webhooks are rendered.
ALL_WEBHOOKS = {"examplePolicies": ["pod-security-restricted"]}
IGNORE = {"key": "fluxadmit.io/ignore", "operator": "NotIn", "values": ["true"]}

_chart: helm.Chart | None = None


def chart() -> helm.Chart:
    global _chart
    if _chart is None:
        _chart = helm.Chart.load(CHART)
    return _chart


def render(values=None, name=RELEASE, namespace=NAMESPACE) -> list[dict]:
    """Renders like `helm install` (offline: `lookup` finds nothing) and parses the documents."""
    out = chart().render(values or {}, name=name, namespace=namespace, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def of_kind(docs, kind) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind) -> dict:
    found = of_kind(docs, kind)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, got {len(found)}")
    return found[0]


def container(docs) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def duration_ms(s: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m)?", s)
    assert m, f"bad duration {s!r}"
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 1, "s": 1000, "m": 60000}[unit]


def webhooks(docs) -> dict[str, dict]:
    """Every webhook by name, with the kind of its configuration."""
    out = {}
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for cfg in of_kind(docs, kind):
            for w in cfg["webhooks"]:
                out[w["name"]] = dict(w, _kind=kind, _config=cfg)
    return out


def merged(*values: dict) -> dict:
    """Deep merge of values dicts (later wins), like Helm's coalescing of -f files."""
    out: dict = {}
    for v in values:
        for k, x in v.items():
            out[k] = merged(out[k], x) if isinstance(x, dict) and isinstance(out.get(k), dict) else x
    return out


def selector_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels AND matchExpressions)."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def rule_resources(webhook) -> set[tuple[str, str]]:
    return {(g, r) for rule in webhook["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


def find_binary() -> Path | None:
    candidates = [os.environ.get("FLUXADMIT_BIN")] if os.environ.get("FLUXADMIT_BIN") else []
    candidates += [REPO / "target" / "debug" / "fluxadmit", REPO / "target" / "release" / "fluxadmit"]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    return None


def tls_handshake(ca_pem: str, cert_pem: str, key_pem: str, hostname: str) -> None:
    """A real TLS handshake (stdlib ssl): the server presents cert/key, the client trusts only
    ca_pem and checks hostname. Raises ssl.SSLError when the chain or the name does not verify."""
    with tempfile.TemporaryDirectory() as d:
        certfile, keyfile = Path(d, "tls.crt"), Path(d, "tls.key")
        certfile.write_text(cert_pem)
        keyfile.write_text(key_pem)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(certfile, keyfile)
    client_ctx = ssl.create_default_context(cadata=ca_pem)
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.sendall(b"ok")
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=hostname) as c:
            assert c.recv(2) == b"ok"
    finally:
        t.join(10)
        a.close()
        b.close()


def certificate_sans(cert_pem: str) -> set[str] | None:
    """DNS SANs of a PEM certificate: with `cryptography` when installed, else with CPython's
    ssl decoder; None when neither is available."""
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return set(ext.value.get_values_for_type(x509.DNSName))
    except ImportError:
        pass
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write(cert_pem)
    try:
        info = decode(f.name)
    finally:
        os.unlink(f.name)
    return {v for k, v in info.get("subjectAltName", ()) if k == "DNS"}


class LintAndSchema(unittest.TestCase):
    def test_lint_strict_passes(self):
        for values in ({}, {"certificates": {"mode": "certManager"}, "watchConfigMaps": True},
                       merged(ALL_WEBHOOKS, {"webhooks": {"exemptFluxOwners": {
                           "kustomizations": ["flux-system", "infra-controllers"], "helmReleases": ["fluxadmit"]}}})):
            report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
            self.assertEqual(report["errors"], [], report)
            problems = [m for m in report["messages"] if m["severity"] >= 2]
            self.assertEqual(problems, [], report)

    def test_chart_metadata(self):
        meta = chart().metadata
        self.assertEqual(meta["apiVersion"], "v2")
        self.assertEqual(meta["name"], "fluxadmit")
        self.assertEqual(meta["appVersion"], "0.1.0")

    def test_defaults_pass_the_schema(self):
        chart().validate_schema(chart().values)
        chart().validate_schema({})

    def test_schema_rejects_a_typo(self):
        with self.assertRaisesRegex(helm.HelmValuesError, "replicaCont"):
            chart().validate_schema({"replicaCont": 2})
        with self.assertRaisesRegex(helm.HelmValuesError, "replicaCont"):
            render({"replicaCont": 2})  # install validates too
        for nested in (
            {"webhooks": {"fluxValidation": {"failurepolicy": "Fail"}}},
            {"certificates": {"helm": {"validity": 1}}},
            {"image": {"tags": "x"}},
            {"server": {"timout": "3s"}},
        ):
            with self.subTest(nested=nested), self.assertRaises(helm.HelmValuesError):
                chart().validate_schema(nested)

    def test_schema_rejects_bad_enums(self):
        for values, pattern in (
            ({"webhooks": {"fluxValidation": {"failurePolicy": "Maybe"}}}, "Fail"),
            ({"webhooks": {"workloadMutation": {"failurePolicy": "fail"}}}, "Fail"),
            ({"certificates": {"mode": "vault"}}, "certManager"),
            ({"webhooks": {"workloadMutation": {"reinvocationPolicy": "Always"}}}, "IfNeeded"),
            ({"webhooks": {"fluxValidation": {"timeoutSeconds": 31}}}, "30"),
            ({"server": {"timeout": "1.5s"}}, "pattern"),
            ({"examplePolicies": ["no-such-example"]}, "tiered-deployment"),
        ):
            with self.subTest(values=values):
                with self.assertRaisesRegex(helm.HelmValuesError, pattern):
                    chart().validate_schema(values)

    def test_values_yaml_is_commented(self):
        lines = (CHART / "values.yaml").read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^[A-Za-z]", line):
                with self.subTest(key=line):
                    self.assertTrue(lines[i - 1].startswith("#"), f"no comment above {line!r}")


class DefaultRender(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render()

    def test_kinds_and_names(self):
        got = sorted((d["kind"], d["metadata"]["name"]) for d in self.docs)
        self.assertEqual(
            got,
            sorted(
                [
                    ("ClusterRole", "fluxadmit"),
                    ("ClusterRoleBinding", "fluxadmit"),
                    ("ConfigMap", "fluxadmit-policies"),
                    ("Deployment", "fluxadmit"),
                    ("MutatingWebhookConfiguration", "fluxadmit"),
                    ("PodDisruptionBudget", "fluxadmit"),
                    ("Secret", "fluxadmit-tls"),
                    ("Service", "fluxadmit"),
                    ("ServiceAccount", "fluxadmit"),
                    ("ValidatingWebhookConfiguration", "fluxadmit"),
                ]
            ),
        )
        for d in self.docs:
            if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                                 "ValidatingWebhookConfiguration"):
                self.assertEqual(d["metadata"]["namespace"], NAMESPACE, d["kind"])

    def test_other_release_names(self):
        docs = render(name="admission", namespace="policy")
        self.assertEqual(one(docs, "Deployment")["metadata"]["name"], "admission-fluxadmit")
        hook = webhooks(docs)["flux.validate.fluxadmit.io"]
        self.assertEqual(hook["clientConfig"]["service"],
                         {"name": "admission-fluxadmit", "namespace": "policy", "path": "/validate", "port": 443})

    def test_service(self):
        svc = one(self.docs, "Service")
        ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
        self.assertEqual(ports, {"https": (443, "https"), "metrics": (9090, "metrics")})
        c = container(self.docs)
        self.assertEqual({p["name"]: p["containerPort"] for p in c["ports"]}, {"https": 8443, "metrics": 9090})
        self.assertEqual(svc["spec"]["selector"],
                         one(self.docs, "Deployment")["spec"]["selector"]["matchLabels"])

    def test_deployment_command_and_env(self):
        c = container(self.docs)
        self.assertEqual(c["command"], ["fluxadmit"])
        args = c["args"]
        self.assertEqual(args[0], "serve")
        self.assertIn("--watch", args)
        self.assertNotIn("--watch-configmaps", args)
        for flag, value in (("--cert-dir", "/certs"), ("--policies", "/policies"), ("--addr", "0.0.0.0:8443"),
                            ("--metrics-addr", "0.0.0.0:9090"), ("--log-format", "json"), ("--drain", "10000ms")):
            self.assertEqual(arg(args, flag), value, flag)
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["FLUXADMIT_NAMESPACE"]["value"], NAMESPACE)
        self.assertEqual(c["image"], "ghcr.io/fluxadmit/fluxadmit:0.1.0")
        self.assertEqual(c["imagePullPolicy"], "IfNotPresent")

    def test_deployment_availability(self):
        dep = one(self.docs, "Deployment")
        self.assertEqual(dep["spec"]["replicas"], 2)
        pod = dep["spec"]["template"]["spec"]
        terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        self.assertEqual(terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"],
                         dep["spec"]["selector"]["matchLabels"])
        self.assertNotIn("requiredDuringSchedulingIgnoredDuringExecution", pod["affinity"]["podAntiAffinity"])
        pdb = one(self.docs, "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["minAvailable"], 1)
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], dep["spec"]["selector"]["matchLabels"])
        self.assertEqual(of_kind(render({"replicaCount": 1}), "PodDisruptionBudget"), [],
                         "a minAvailable 1 PDB over one replica would block node drains")

    def test_probes(self):
        c = container(self.docs)
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "https", "scheme": "HTTPS"})
        self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "https", "scheme": "HTTPS"})

    def test_restricted_security_context(self):
        pod = one(self.docs, "Deployment")["spec"]["template"]["spec"]
        c = container(self.docs)
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
        sc = c["securityContext"]
        self.assertTrue(sc["runAsNonRoot"])
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"], {"drop": ["ALL"]})
        self.assertEqual(sc["seccompProfile"], {"type": "RuntimeDefault"})
        self.assertNotIn("privileged", sc)
        self.assertFalse(pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"))
        self.assertIn("requests", c["resources"])
        self.assertIn("limits", c["resources"])

    def test_certs_and_policies_mounts(self):
        pod = one(self.docs, "Deployment")["spec"]["template"]["spec"]
        c = container(self.docs)
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        # No subPath: the kubelet's ..data swap must reach the server, which reloads certs.
        self.assertFalse(any("subPath" in m or "subPathExpr" in m for m in c["volumeMounts"]))
        self.assertEqual(volumes[mounts["/certs"]["name"]]["secret"]["secretName"], "fluxadmit-tls")
        self.assertEqual(volumes[mounts["/policies"]["name"]]["configMap"]["name"], "fluxadmit-policies")
        self.assertTrue(mounts["/certs"]["readOnly"])
        annotations = one(self.docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        self.assertIn("checksum/policies", annotations, "policies are read at startup: changes must roll pods")
        other = render({"extraPolicies": {"x.yaml": "# x\n"}})
        self.assertNotEqual(
            annotations["checksum/policies"],
            one(other, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/policies"],
        )

    def test_termination_grace_exceeds_drain_plus_timeout(self):
        for values in ({}, {"server": {"drain": "30s"}}, {"server": {"timeout": "2s", "drain": "500ms"}}):
            with self.subTest(values=values):
                docs = render(values)
                args = container(docs)["args"]
                busy = duration_ms(arg(args, "--drain")) + duration_ms(arg(args, "--timeout"))
                grace = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                self.assertGreater(grace * 1000, busy)
        self.assertEqual(
            one(render({"terminationGracePeriodSeconds": 60}), "Deployment")["spec"]["template"]["spec"][
                "terminationGracePeriodSeconds"], 60)
        with self.assertRaisesRegex(helm.HelmRenderError, "terminationGracePeriodSeconds"):
            render({"terminationGracePeriodSeconds": 12})  # 10s drain + 4s timeout


class Webhooks(unittest.TestCase):
    """The three webhooks, rendered with a policy set that needs all of them (ALL_WEBHOOKS)."""

    @classmethod
    def setUpClass(cls):
        cls.docs = render(ALL_WEBHOOKS)
        cls.hooks = webhooks(cls.docs)

    def test_three_webhooks(self):
        self.assertEqual(
            {n: h["_kind"] for n, h in self.hooks.items()},
            {
                "flux.validate.fluxadmit.io": "ValidatingWebhookConfiguration",
                "workloads.validate.fluxadmit.io": "ValidatingWebhookConfiguration",
                "workloads.mutate.fluxadmit.io": "MutatingWebhookConfiguration",
            },
        )

    def test_common_design_choices(self):
        for name, h in self.hooks.items():
            with self.subTest(webhook=name):
                self.assertEqual(h["admissionReviewVersions"], ["v1"])
                self.assertEqual(h["sideEffects"], "None")
                self.assertEqual(h["matchPolicy"], "Equivalent")
                self.assertIn(h["failurePolicy"], ("Fail", "Ignore"))
                self.assertIsInstance(h["timeoutSeconds"], int)
                svc = h["clientConfig"]["service"]
                self.assertEqual((svc["name"], svc["namespace"], svc["port"]), ("fluxadmit", NAMESPACE, 443))
                for rule in h["rules"]:
                    self.assertEqual(sorted(rule["operations"]), ["CREATE", "UPDATE"])

    def test_namespace_selector_excludes_kube_system_and_release_namespace(self):
        for namespace, extra in ((NAMESPACE, []), ("fluxadmit", ["monitoring", "cert-manager"]), ("kube-system", [])):
            docs = render(merged(ALL_WEBHOOKS, {"webhooks": {"excludedNamespaces": extra}}), namespace=namespace)
            self.assertEqual(len(webhooks(docs)), 3)
            for name, h in webhooks(docs).items():
                with self.subTest(namespace=namespace, webhook=name):
                    exprs = h["namespaceSelector"]["matchExpressions"]
                    sel = [e for e in exprs if e["key"] == "kubernetes.io/metadata.name"]
                    self.assertEqual(len(sel), 1)
                    self.assertEqual(sel[0]["operator"], "NotIn")
                    self.assertEqual(set(sel[0]["values"]), {"kube-system", namespace, *extra})
                    self.assertEqual(len(sel[0]["values"]), len(set(sel[0]["values"])))

    def test_default_failure_policies_and_timeouts(self):
        expect = {
            "flux.validate.fluxadmit.io": ("Fail", 10, "/validate"),
            "workloads.validate.fluxadmit.io": ("Ignore", 5, "/validate"),
            "workloads.mutate.fluxadmit.io": ("Ignore", 5, "/mutate"),
        }
        for name, (policy, timeout, path) in expect.items():
            h = self.hooks[name]
            self.assertEqual((h["failurePolicy"], h["timeoutSeconds"], h["clientConfig"]["service"]["path"]),
                             (policy, timeout, path), name)
        self.assertEqual(self.hooks["workloads.mutate.fluxadmit.io"]["reinvocationPolicy"], "IfNeeded")

    def test_configured_failure_policies_and_timeouts(self):
        values = {"webhooks": {
            "fluxValidation": {"failurePolicy": "Ignore", "timeoutSeconds": 15},
            "workloadValidation": {"failurePolicy": "Fail", "timeoutSeconds": 3},
            "workloadMutation": {"failurePolicy": "Fail", "timeoutSeconds": 7},
        }}
        hooks = webhooks(render(merged(ALL_WEBHOOKS, values)))
        self.assertEqual(
            {n: (h["failurePolicy"], h["timeoutSeconds"]) for n, h in hooks.items()},
            {
                "flux.validate.fluxadmit.io": ("Ignore", 15),
                "workloads.validate.fluxadmit.io": ("Fail", 3),
                "workloads.mutate.fluxadmit.io": ("Fail", 7),
            },
        )

    def test_rules(self):
        flux = self.hooks["flux.validate.fluxadmit.io"]
        versions = {(g, r): set(rule["apiVersions"]) for rule in flux["rules"]
                    for g in rule["apiGroups"] for r in rule["resources"]}
        self.assertEqual(versions, {
            ("helm.toolkit.fluxcd.io", "helmreleases"): {"v2", "v2beta2"},
            ("kustomize.toolkit.fluxcd.io", "kustomizations"): {"v1", "v1beta2"},
        })
        for name in ("workloads.validate.fluxadmit.io", "workloads.mutate.fluxadmit.io"):
            self.assertEqual(rule_resources(self.hooks[name]), WORKLOAD_RESOURCES, name)

    def test_server_timeout_below_every_webhook_timeout(self):
        for values in (
            {},
            {"webhooks": {"workloadValidation": {"timeoutSeconds": 2}}},
            {"webhooks": {"workloadValidation": {"enabled": False}, "workloadMutation": {"enabled": False}}},
            {"webhooks": {"fluxValidation": {"timeoutSeconds": 1}}},
            {"server": {"timeout": "4500ms"}},
        ):
            with self.subTest(values=values):
                docs = render(merged(ALL_WEBHOOKS, values))
                timeout = duration_ms(arg(container(docs)["args"], "--timeout"))
                for name, h in webhooks(docs).items():
                    self.assertLess(timeout, h["timeoutSeconds"] * 1000, name)
        self.assertEqual(arg(container(self.docs)["args"], "--timeout"), "4000ms")
        with self.assertRaisesRegex(helm.HelmRenderError, "server.timeout"):
            render(merged(ALL_WEBHOOKS, {"server": {"timeout": "5s"}}))
        with self.assertRaisesRegex(helm.HelmRenderError, "server.timeout"):
            render(merged(ALL_WEBHOOKS, {"server": {"timeout": "6s"},
                                         "webhooks": {"workloadMutation": {"timeoutSeconds": 6}}}))
        # Only the webhooks actually registered count: with the default policies there is no
        # workload validation webhook, so its (shorter) timeout does not shorten --timeout.
        docs = render({"webhooks": {"workloadValidation": {"timeoutSeconds": 2}}})
        self.assertNotIn("workloads.validate.fluxadmit.io", webhooks(docs))
        self.assertEqual(arg(container(docs)["args"], "--timeout"), "4000ms")
        docs = render(merged(ALL_WEBHOOKS, {"webhooks": {"workloadValidation": {"timeoutSeconds": 2}}}))
        self.assertEqual(arg(container(docs)["args"], "--timeout"), "1000ms")

    def test_each_webhook_can_be_disabled(self):
        for key, name in (("fluxValidation", "flux.validate.fluxadmit.io"),
                          ("workloadValidation", "workloads.validate.fluxadmit.io"),
                          ("workloadMutation", "workloads.mutate.fluxadmit.io")):
            with self.subTest(webhook=key):
                hooks = webhooks(render(merged(ALL_WEBHOOKS, {"webhooks": {key: {"enabled": False}}})))
                self.assertNotIn(name, hooks)
                self.assertEqual(len(hooks), 2)
        docs = render(merged(ALL_WEBHOOKS, {"webhooks": {k: {"enabled": False} for k in
                                                         ("fluxValidation", "workloadValidation",
                                                          "workloadMutation")}}))
        self.assertEqual(of_kind(docs, "ValidatingWebhookConfiguration"), [])
        self.assertEqual(of_kind(docs, "MutatingWebhookConfiguration"), [])


def policy_text(name: str, resources, rules, namespace_selector=None, charts=None) -> str:
    """A DeploymentPolicy file's text."""
    match = {"resources": resources}
    if namespace_selector is not None:
        match["namespaceSelector"] = namespace_selector
    if charts is not None:
        match["charts"] = charts
    return yaml.safe_dump({"apiVersion": "fluxadmit.io/v1alpha1", "kind": "DeploymentPolicy",
                           "metadata": {"name": name}, "spec": {"match": match, "rules": rules}})


TENANT = {"key": "toolkit.fluxcd.io/tenant", "operator": "Exists"}
FLUX_RESOURCES = [{"apiGroups": ["helm.toolkit.fluxcd.io"], "kinds": ["HelmRelease"]}]
POD_RESOURCES = [{"apiGroups": [""], "kinds": ["Pod"]}]
MUTATE_RULE = {"name": "m", "mutate": {"overlay": {"metadata": {"+(labels)": {"a": "b"}}}}}
VALIDATE_RULE = {"name": "v", "requiredLabels": {"labels": ["team"]}}
NO_DEFAULTS = {"defaultPolicies": {"enabled": False}}


class Scope(unittest.TestCase):
    """The workload webhooks follow the enabled policies: registered only when a policy can
    match workloads and mutates (resp. validates) them, narrowed to the namespaces the
    policies select when they all agree."""

    def base_exprs(self, namespace=NAMESPACE):
        return [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", namespace]},
                IGNORE]

    def ns_exprs(self, hook) -> list[dict]:
        return hook["namespaceSelector"]["matchExpressions"]

    def names(self, values) -> set[str]:
        return set(webhooks(render(values)))

    def test_defaults_mutation_only_in_tenant_namespaces(self):
        docs = render()
        hooks = webhooks(docs)
        self.assertEqual(set(hooks), {"flux.validate.fluxadmit.io", "workloads.mutate.fluxadmit.io"})
        self.assertEqual(one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]["name"],
                         "flux.validate.fluxadmit.io")
        mutate = hooks["workloads.mutate.fluxadmit.io"]
        self.assertEqual(self.ns_exprs(mutate), self.base_exprs() + [TENANT])
        # The flux webhook is never narrowed by workload policies.
        self.assertEqual(self.ns_exprs(hooks["flux.validate.fluxadmit.io"]), self.base_exprs())
        sel = mutate["namespaceSelector"]
        self.assertTrue(selector_matches(sel, {"kubernetes.io/metadata.name": "team-a",
                                               "toolkit.fluxcd.io/tenant": "team-a"}))
        self.assertFalse(selector_matches(sel, {"kubernetes.io/metadata.name": "default"}))
        self.assertFalse(selector_matches(sel, {"kubernetes.io/metadata.name": "team-a",
                                                "toolkit.fluxcd.io/tenant": "team-a", "fluxadmit.io/ignore": "true"}))
        self.assertFalse(selector_matches(sel, {"kubernetes.io/metadata.name": "kube-system",
                                                "toolkit.fluxcd.io/tenant": "x"}))

    def test_validating_example_brings_workload_validation_back_unnarrowed(self):
        hooks = webhooks(render({"examplePolicies": ["pod-security-restricted"]}))
        self.assertEqual(set(hooks), {"flux.validate.fluxadmit.io", "workloads.validate.fluxadmit.io",
                                      "workloads.mutate.fluxadmit.io"})
        self.assertEqual(self.ns_exprs(hooks["workloads.validate.fluxadmit.io"]), self.base_exprs())
        self.assertEqual(rule_resources(hooks["workloads.validate.fluxadmit.io"]), WORKLOAD_RESOURCES)
        # The mutation webhook still follows the mutating policies only.
        self.assertEqual(self.ns_exprs(hooks["workloads.mutate.fluxadmit.io"]), self.base_exprs() + [TENANT])

    def test_image_pull_secrets_mutates_and_validates_in_tenant_namespaces(self):
        hooks = webhooks(render(merged(NO_DEFAULTS, {"examplePolicies": ["image-pull-secrets"]})))
        for name in ("workloads.validate.fluxadmit.io", "workloads.mutate.fluxadmit.io"):
            self.assertEqual(self.ns_exprs(hooks[name]), self.base_exprs() + [TENANT], name)
        # With the default mutation policy too: same selector, still narrowed.
        hooks = webhooks(render({"examplePolicies": ["image-pull-secrets"]}))
        self.assertEqual(self.ns_exprs(hooks["workloads.mutate.fluxadmit.io"]), self.base_exprs() + [TENANT])

    def test_no_workload_policy_no_workload_webhook(self):
        for values in (
            NO_DEFAULTS,
            {"defaultPolicies": {"exclude": ["restricted-security-context"]}},
            {"defaultPolicies": {"exclude": ["restricted-security-context"]},
             "examplePolicies": ["required-labels", "tiered-deployment", "wiz-kubernetes-integration"]},
        ):
            with self.subTest(values=values):
                docs = render(values)
                self.assertEqual(set(webhooks(docs)), {"flux.validate.fluxadmit.io"})
                self.assertEqual(of_kind(docs, "MutatingWebhookConfiguration"), [])
                self.assertEqual(len(of_kind(docs, "ValidatingWebhookConfiguration")), 1,
                                 "the Flux webhook stays registered")

    def test_what_covers_workloads(self):
        flux = "flux.validate.fluxadmit.io"
        val = "workloads.validate.fluxadmit.io"
        for resources, charts, covers in (
            ([], None, True),  # empty resources: every kind
            ([{"kinds": ["*"]}], None, True),
            ([{"apiGroups": ["*"], "kinds": ["Deployment"]}], None, True),
            ([{"apiGroups": ["apps"], "kinds": ["Deployment"]}], None, True),
            ([{"apiGroups": ["batch"], "kinds": ["CronJob"]}], None, True),
            ([{"apiGroups": [""]}], None, True),  # empty kinds: every kind of the group
            ([{"kinds": ["Pod"]}], None, True),  # empty apiGroups: any group
            ([{"apiGroups": ["apps"], "kinds": ["Pod"]}], None, False),  # Pod is in the core group
            ([{"apiGroups": [""], "kinds": ["Deployment"]}], None, False),
            ([{"apiGroups": ["apps"], "kinds": ["pod"]}], None, False),  # kinds are case-sensitive
            (FLUX_RESOURCES, None, False),
            ([], ["podinfo"], False),  # match.charts selects HelmReleases only
        ):
            with self.subTest(resources=resources, charts=charts):
                text = policy_text("p", resources, [VALIDATE_RULE], charts=charts)
                names = self.names(merged(NO_DEFAULTS, {"extraPolicies": {"p.yaml": text}}))
                self.assertEqual(val in names, covers)
                self.assertIn(flux, names)
                self.assertNotIn("workloads.mutate.fluxadmit.io", names)

    def test_what_mutates_and_what_validates(self):
        mut, val = "workloads.mutate.fluxadmit.io", "workloads.validate.fluxadmit.io"
        registries = [{"pattern": "ghcr.io/acme/*", "secret": "ghcr"}]
        for rules, expect in (
            ([MUTATE_RULE], {mut}),
            ([VALIDATE_RULE], {val}),
            ([MUTATE_RULE, VALIDATE_RULE], {mut, val}),
            ([{"name": "d", "dependsOn": {}}], {val}),
            ([{"name": "s", "referencedSecrets": {}}], {val}),
            ([{"name": "s", "requiredSecrets": {"secrets": [{"name": "x"}]}}], {val}),
            ([{"name": "e", "expression": {"expression": "true", "message": "m"}}], {val}),
            ([{"name": "p", "podSecurity": {"level": "baseline"}}], {val}),
            ([{"name": "i", "imagePullSecrets": {}}], {val}),  # validate defaults to true
            ([{"name": "i", "imagePullSecrets": {"validate": False}}], set()),
            ([{"name": "i", "imagePullSecrets": {"validate": False, "registries": registries}}], {mut}),
            ([{"name": "i", "imagePullSecrets": {"registries": registries}}], {mut, val}),
            ([], set()),
        ):
            with self.subTest(rules=rules):
                text = policy_text("p", POD_RESOURCES, rules)
                names = self.names(merged(NO_DEFAULTS, {"extraPolicies": {"p.yaml": text}}))
                self.assertEqual(names - {"flux.validate.fluxadmit.io"}, expect)

    def test_narrowing_needs_every_policy_to_agree(self):
        mut = "workloads.mutate.fluxadmit.io"
        other = {"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "tier", "operator": "In",
                                                                      "values": ["web", "api"]}]}
        # Alone, a selector with matchLabels narrows: labels become In expressions.
        text = policy_text("p", POD_RESOURCES, [MUTATE_RULE], namespace_selector=other)
        hooks = webhooks(render(merged(NO_DEFAULTS, {"extraPolicies": {"p.yaml": text}})))
        self.assertEqual(self.ns_exprs(hooks[mut]), self.base_exprs() + [
            {"key": "team", "operator": "In", "values": ["a"]},
            {"key": "tier", "operator": "In", "values": ["web", "api"]}])
        # With the default policy (tenant selector): two different selectors, no narrowing.
        hooks = webhooks(render({"extraPolicies": {"p.yaml": text}}))
        self.assertEqual(self.ns_exprs(hooks[mut]), self.base_exprs())
        # A mutating workload policy without a namespaceSelector: no narrowing.
        text = policy_text("p", POD_RESOURCES, [MUTATE_RULE])
        hooks = webhooks(render({"extraPolicies": {"p.yaml": text}}))
        self.assertEqual(self.ns_exprs(hooks[mut]), self.base_exprs())
        # The same selector as the default policy: still narrowed.
        text = policy_text("p", POD_RESOURCES, [MUTATE_RULE], namespace_selector={"matchExpressions": [TENANT]})
        hooks = webhooks(render({"extraPolicies": {"p.yaml": text}}))
        self.assertEqual(self.ns_exprs(hooks[mut]), self.base_exprs() + [TENANT])
        # A policy that does not cover workloads has no say.
        text = policy_text("p", FLUX_RESOURCES, [VALIDATE_RULE])
        hooks = webhooks(render({"extraPolicies": {"p.yaml": text}}))
        self.assertEqual(self.ns_exprs(hooks[mut]), self.base_exprs() + [TENANT])
        self.assertNotIn("workloads.validate.fluxadmit.io", hooks)

    def test_unreadable_policies_cover_everything(self):
        every = {"flux.validate.fluxadmit.io", "workloads.validate.fluxadmit.io", "workloads.mutate.fluxadmit.io"}
        for values in (
            {"extraPolicies": {"broken.yaml": "spec: [unclosed\n"}},
            {"extraPolicies": {"list.yaml": "- a\n- b\n"}},
            {"extraPolicies": {"nospec.yaml": "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\n"
                                              "metadata: {name: x}\n"}},
            {"policyResources": True},  # DeploymentPolicy objects in the cluster: unknown to the chart
        ):
            with self.subTest(values=values):
                hooks = webhooks(render(values))
                self.assertEqual(set(hooks), every)
                for name in ("workloads.validate.fluxadmit.io", "workloads.mutate.fluxadmit.io"):
                    self.assertEqual(self.ns_exprs(hooks[name]), self.base_exprs(), name)
        # A comment-only file is nothing at all.
        self.assertEqual(self.names({"extraPolicies": {"x.yaml": "# x\n"}}),
                         {"flux.validate.fluxadmit.io", "workloads.mutate.fluxadmit.io"})

    def test_every_document_of_a_file_counts(self):
        flux_only = policy_text("a", FLUX_RESOURCES, [VALIDATE_RULE])
        workloads = policy_text("b", POD_RESOURCES, [VALIDATE_RULE])
        as_list = yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                  "items": [yaml.safe_load(flux_only), yaml.safe_load(workloads)]})
        as_json = json.dumps(yaml.safe_load(workloads))
        for name, text in (("multi.yaml", f"{flux_only}---\n{workloads}"),
                           ("multi.yaml", f"---\n{flux_only}--- # second\n{workloads}...\n"),
                           ("list.yaml", as_list), ("p.json", as_json)):
            with self.subTest(text=text):
                names = self.names(merged(NO_DEFAULTS, {"extraPolicies": {name: text}}))
                self.assertIn("workloads.validate.fluxadmit.io", names)
        names = self.names(merged(NO_DEFAULTS, {"extraPolicies": {"multi.yaml": f"{flux_only}---\n{flux_only}"}}))
        self.assertEqual(names, {"flux.validate.fluxadmit.io"})

    def test_switches_still_win(self):
        values = merged(ALL_WEBHOOKS, {"webhooks": {"workloadValidation": {"enabled": False},
                                                    "workloadMutation": {"enabled": False}}})
        self.assertEqual(self.names(values), {"flux.validate.fluxadmit.io"})
        # Only the workload validation webhook: the ValidatingWebhookConfiguration holds just it.
        docs = render(merged(ALL_WEBHOOKS, {"webhooks": {"fluxValidation": {"enabled": False}}}))
        self.assertEqual([w["name"] for w in one(docs, "ValidatingWebhookConfiguration")["webhooks"]],
                         ["workloads.validate.fluxadmit.io"])

    def test_notes_say_why_a_webhook_is_missing(self):
        notes = next(t for p, t in chart().render({}, name=RELEASE, namespace=NAMESPACE, is_install=True).items()
                     if p.endswith("NOTES.txt"))
        self.assertIn("workload validation: not registered: no enabled policy validates workloads", notes)
        self.assertIn("workload mutation:   failurePolicy Ignore, 5s", notes)


class Lockout(unittest.TestCase):
    """fluxadmit never locks Flux out of repairing fluxadmit: the exemption label and the
    objects applied by the Flux owners of exemptFluxOwners skip every webhook."""

    OWNERS = {"webhooks": {"exemptFluxOwners": {"kustomizations": ["flux-system", "infra-controllers"],
                                                "helmReleases": ["fluxadmit"]}}}

    def test_ignore_label_on_every_webhook(self):
        hooks = webhooks(render(ALL_WEBHOOKS))
        self.assertEqual(len(hooks), 3)
        for name, h in hooks.items():
            with self.subTest(webhook=name):
                self.assertIn(IGNORE, h["namespaceSelector"]["matchExpressions"])
                self.assertIn(IGNORE, h["objectSelector"]["matchExpressions"])
                self.assertNotIn("matchLabels", h["objectSelector"])
                for sel in (h["namespaceSelector"], h["objectSelector"]):
                    self.assertTrue(selector_matches(sel, {"kubernetes.io/metadata.name": "apps",
                                                           "toolkit.fluxcd.io/tenant": "apps"}),
                                    "objects and namespaces without the label are seen")
                    self.assertTrue(selector_matches(sel, {"kubernetes.io/metadata.name": "apps",
                                                           "toolkit.fluxcd.io/tenant": "apps",
                                                           "fluxadmit.io/ignore": "false"}))
                    self.assertFalse(selector_matches(sel, {"kubernetes.io/metadata.name": "apps",
                                                            "toolkit.fluxcd.io/tenant": "apps",
                                                            "fluxadmit.io/ignore": "true"}))

    def test_default_exempts_flux_bootstrap(self):
        self.assertEqual(chart().values["webhooks"]["exemptFluxOwners"],
                         {"kustomizations": ["flux-system"], "helmReleases": []})
        for name, h in webhooks(render(ALL_WEBHOOKS)).items():
            with self.subTest(webhook=name):
                self.assertEqual(h["objectSelector"]["matchExpressions"], [
                    IGNORE, {"key": "kustomize.toolkit.fluxcd.io/name", "operator": "NotIn",
                             "values": ["flux-system"]}])

    def test_exempt_flux_owners_render_into_object_selector(self):
        hooks = webhooks(render(merged(ALL_WEBHOOKS, self.OWNERS)))
        self.assertEqual(len(hooks), 3)
        for name, h in hooks.items():
            with self.subTest(webhook=name):
                sel = h["objectSelector"]
                self.assertEqual(sel["matchExpressions"], [
                    IGNORE,
                    {"key": "kustomize.toolkit.fluxcd.io/name", "operator": "NotIn",
                     "values": ["flux-system", "infra-controllers"]},
                    {"key": "helm.toolkit.fluxcd.io/name", "operator": "NotIn", "values": ["fluxadmit"]},
                ])
                # fluxadmit's HelmRelease, applied by infra-controllers: never sent to fluxadmit.
                self.assertFalse(selector_matches(sel, {"kustomize.toolkit.fluxcd.io/name": "infra-controllers",
                                                        "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}))
                # What the fluxadmit HelmRelease installs.
                self.assertFalse(selector_matches(sel, {"helm.toolkit.fluxcd.io/name": "fluxadmit",
                                                        "helm.toolkit.fluxcd.io/namespace": "flux-system"}))
                # Everything else Flux applies is still seen.
                self.assertTrue(selector_matches(sel, {"kustomize.toolkit.fluxcd.io/name": "apps",
                                                       "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}))
                self.assertTrue(selector_matches(sel, {"helm.toolkit.fluxcd.io/name": "podinfo"}))
                self.assertTrue(selector_matches(sel, {}))

    def test_empty_lists_render_no_expression(self):
        values = merged(ALL_WEBHOOKS, {"webhooks": {"exemptFluxOwners": {"kustomizations": [], "helmReleases": []}}})
        for name, h in webhooks(render(values)).items():
            with self.subTest(webhook=name):
                self.assertEqual(h["objectSelector"]["matchExpressions"], [IGNORE])
        values = merged(ALL_WEBHOOKS, {"webhooks": {"exemptFluxOwners": {"kustomizations": [],
                                                                         "helmReleases": ["fluxadmit"]}}})
        for name, h in webhooks(render(values)).items():
            with self.subTest(webhook=name):
                self.assertEqual(h["objectSelector"]["matchExpressions"], [
                    IGNORE, {"key": "helm.toolkit.fluxcd.io/name", "operator": "NotIn", "values": ["fluxadmit"]}])

    def test_schema_checks_exempt_flux_owners(self):
        chart().validate_schema(self.OWNERS)
        for bad, pattern in (
            ({"kustomizations": "flux-system"}, "array"),
            ({"helmReleases": [1]}, "string"),
            ({"kustomization": ["flux-system"]}, "kustomization"),
            ({"kustomizations": ["Flux System"]}, "pattern"),
            ({"kustomizations": ["a" * 64]}, "64|63|long"),
            ({"helmReleases": ["x", "x"]}, "unique|duplicate|x"),
        ):
            with self.subTest(bad=bad):
                with self.assertRaisesRegex(helm.HelmValuesError, pattern):
                    chart().validate_schema({"webhooks": {"exemptFluxOwners": bad}})
        with self.assertRaises(helm.HelmValuesError):
            render({"webhooks": {"exemptFluxOwners": {"kustomizations": "flux-system"}}})

    def test_values_document_the_failure_modes(self):
        lines = (CHART / "values.yaml").read_text().splitlines()
        i = lines.index("webhooks:")
        j = i
        while lines[j - 1].startswith("#"):
            j -= 1
        comment = "\n".join(lines[j:i])
        for needle in ("fails closed", "failurePolicy Fail", "fail open", "failurePolicy", "Ignore",
                       "fluxadmit.io/ignore", "exemptFluxOwners"):
            self.assertIn(needle, comment)


class Certificates(unittest.TestCase):
    def test_helm_mode_secret_and_ca_bundle(self):
        docs = render(ALL_WEBHOOKS)
        secret = one(docs, "Secret")
        self.assertEqual(secret["type"], "kubernetes.io/tls")
        self.assertEqual(set(secret["data"]), {"ca.crt", "tls.crt", "tls.key"})
        pem = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        self.assertIn("BEGIN CERTIFICATE", pem["ca.crt"])
        self.assertIn("PRIVATE KEY", pem["tls.key"])
        hooks = webhooks(docs)
        self.assertEqual(len(hooks), 3)
        for name, h in hooks.items():
            self.assertEqual(h["clientConfig"]["caBundle"], secret["data"]["ca.crt"], name)
            self.assertNotIn("cert-manager.io/inject-ca-from", h["_config"]["metadata"].get("annotations") or {})
        self.assertEqual(of_kind(docs, "Certificate") + of_kind(docs, "Issuer"), [])

    def test_helm_mode_certificate_serves_the_service_names(self):
        secret = one(render(), "Secret")
        pem = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        for host in SVC_DNS:
            with self.subTest(host=host):
                tls_handshake(pem["ca.crt"], pem["tls.crt"], pem["tls.key"], host)
        with self.assertRaises(ssl.SSLError):
            tls_handshake(pem["ca.crt"], pem["tls.crt"], pem["tls.key"], "fluxadmit.default.svc")
        sans = certificate_sans(pem["tls.crt"])
        if sans is None:
            self.skipTest("neither cryptography nor ssl._ssl._test_decode_cert: SAN list not compared "
                          "(the TLS handshakes above did verify both names)")
        self.assertEqual(sans, set(SVC_DNS))

    def render_upgrade(self, existing: dict, values=None) -> list[dict]:
        """Renders with `lookup` answering `existing` for the TLS Secret: the SDK renders offline
        (lookup finds nothing), so a copy of the chart reads the Secret from a file instead."""
        lookup = 'lookup "v1" "Secret" .Release.Namespace $secretName'
        with tempfile.TemporaryDirectory() as d:
            copy = Path(d, "fluxadmit")
            shutil.copytree(CHART, copy)
            tpl = copy / "templates" / "webhook.yaml"
            text = tpl.read_text()
            self.assertEqual(text.count(lookup), 1, "the chart's lookup of the TLS Secret changed")
            tpl.write_text(text.replace(lookup, '(.Files.Get "existing-secret.yaml" | fromYaml)'))
            (copy / "existing-secret.yaml").write_text(yaml.safe_dump(existing))
            with helm.Chart.load(copy) as c:
                out = c.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
        return [d for path, text in sorted(out.items()) if not path.endswith("NOTES.txt")
                for d in yaml.safe_load_all(text) if d]

    def test_helm_mode_reuses_the_secret_on_upgrade(self):
        first = one(render(), "Secret")
        docs = self.render_upgrade(first)
        again = one(docs, "Secret")
        self.assertEqual(again["data"], first["data"], "the certificates must not churn on upgrade")
        self.assertEqual(again["metadata"]["annotations"], first["metadata"]["annotations"])
        for name, h in webhooks(docs).items():
            self.assertEqual(h["clientConfig"]["caBundle"], first["data"]["ca.crt"], name)

    def test_helm_mode_renews_before_expiry_trusting_both_cas(self):
        first = one(render(), "Secret")
        soon = int(time.time()) + 5 * 86400  # inside renewBeforeDays (30)
        first["metadata"]["annotations"]["fluxadmit.io/not-after"] = str(soon)
        docs = self.render_upgrade(first)
        renewed = one(docs, "Secret")
        self.assertNotEqual(renewed["data"]["ca.crt"], first["data"]["ca.crt"])
        self.assertGreater(int(renewed["metadata"]["annotations"]["fluxadmit.io/not-after"]), soon)
        bundle = base64.b64decode(webhooks(docs)["flux.validate.fluxadmit.io"]["clientConfig"]["caBundle"]).decode()
        # Until the kubelet swaps the mounted files, pods still serve the old certificate.
        self.assertIn(base64.b64decode(renewed["data"]["ca.crt"]).decode(), bundle)
        self.assertIn(base64.b64decode(first["data"]["ca.crt"]).decode(), bundle)

    def test_helm_mode_regenerates_when_the_service_name_changes(self):
        first = one(render(), "Secret")
        first["metadata"]["annotations"]["fluxadmit.io/dns-names"] = "old.flux-system.svc"
        renewed = one(self.render_upgrade(first), "Secret")
        self.assertNotEqual(renewed["data"]["tls.crt"], first["data"]["tls.crt"])
        sans = certificate_sans(base64.b64decode(renewed["data"]["tls.crt"]).decode())
        if sans is not None:
            self.assertEqual(sans, set(SVC_DNS))

    def test_cert_manager_mode(self):
        docs = render(merged(ALL_WEBHOOKS, {"certificates": {"mode": "certManager"}}))
        self.assertEqual(of_kind(docs, "Secret"), [])
        issuers = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "Issuer")}
        self.assertEqual(issuers, {"fluxadmit-selfsigned": {"selfSigned": {}},
                                   "fluxadmit-ca": {"ca": {"secretName": "fluxadmit-ca"}}})
        certs = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "Certificate")}
        self.assertEqual(set(certs), {"fluxadmit-ca", "fluxadmit-tls"})
        self.assertTrue(certs["fluxadmit-ca"]["isCA"])
        self.assertEqual(certs["fluxadmit-ca"]["issuerRef"]["name"], "fluxadmit-selfsigned")
        serving = certs["fluxadmit-tls"]
        self.assertEqual(serving["secretName"], "fluxadmit-tls")
        self.assertEqual(serving["dnsNames"], SVC_DNS)
        self.assertEqual(serving["issuerRef"], {"name": "fluxadmit-ca", "kind": "Issuer", "group": "cert-manager.io"})
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            cfg = one(docs, kind)
            self.assertEqual(cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                             f"{NAMESPACE}/fluxadmit-tls")
            for w in cfg["webhooks"]:
                self.assertNotIn("caBundle", w["clientConfig"])
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        self.assertIn({"name": "certs", "secret": {"secretName": "fluxadmit-tls", "defaultMode": 0o440}},
                      pod["volumes"])

    def test_cert_manager_with_own_issuer(self):
        docs = render({"certificates": {"mode": "certManager",
                                        "certManager": {"issuerRef": {"name": "platform-ca", "kind": "ClusterIssuer"}}}})
        self.assertEqual(of_kind(docs, "Issuer"), [])
        cert = one(docs, "Certificate")
        self.assertEqual(cert["spec"]["issuerRef"], {"name": "platform-ca", "kind": "ClusterIssuer",
                                                     "group": "cert-manager.io"})


class Rbac(unittest.TestCase):
    def grants(self, docs) -> dict[tuple[str, str], list[str]]:
        out = {}
        for rule in one(docs, "ClusterRole")["rules"]:
            self.assertNotIn("resourceNames", rule)
            self.assertNotIn("nonResourceURLs", rule)
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    self.assertNotIn((g, r), out, "duplicate grant")
                    out[(g, r)] = sorted(rule["verbs"])
        return out

    BASE = {
        ("helm.toolkit.fluxcd.io", "helmreleases"),
        ("kustomize.toolkit.fluxcd.io", "kustomizations"),
        # Sources a HelmRelease's spec.chartRef points at.
        ("source.toolkit.fluxcd.io", "ocirepositories"),
        ("source.toolkit.fluxcd.io", "helmcharts"),
        ("", "namespaces"),
        ("", "serviceaccounts"),
        ("", "secrets"),
    }

    def test_read_only_on_exactly_the_watched_kinds(self):
        docs = render()
        grants = self.grants(docs)
        self.assertEqual(set(grants), self.BASE)
        for res, verbs in grants.items():
            self.assertEqual(verbs, sorted(READ_VERBS), res)
        self.assertEqual([d for d in docs if d["kind"] in ("Role", "RoleBinding")], [])
        binding = one(docs, "ClusterRoleBinding")
        self.assertEqual(binding["roleRef"]["name"], one(docs, "ClusterRole")["metadata"]["name"])
        self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": "fluxadmit", "namespace": NAMESPACE}])
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        self.assertEqual(pod["serviceAccountName"], one(docs, "ServiceAccount")["metadata"]["name"])

    def test_configmaps_only_with_watch_configmaps(self):
        docs = render({"watchConfigMaps": True})
        grants = self.grants(docs)
        self.assertEqual(set(grants), self.BASE | {("", "configmaps")})
        self.assertEqual(grants[("", "configmaps")], sorted(READ_VERBS))
        args = container(docs)["args"]
        self.assertIn("--watch-configmaps", args)
        self.assertIn("--watch", args)

    def test_policy_resources_opt_in(self):
        docs = render({"policyResources": True})
        grants = self.grants(docs)
        self.assertEqual(set(grants), self.BASE | {("fluxadmit.io", "deploymentpolicies")})
        self.assertEqual(grants[("fluxadmit.io", "deploymentpolicies")], sorted(READ_VERBS))
        self.assertIn("--policy-resources", container(docs)["args"])
        self.assertNotIn("--policy-resources", container(render())["args"])

        def policy_rules(d):
            vwc = one(d, "ValidatingWebhookConfiguration")
            return [r for w in vwc["webhooks"] for r in w["rules"] if "deploymentpolicies" in r["resources"]]

        # DeploymentPolicy objects are validated at admission only when they are read at all.
        rules = policy_rules(docs)
        self.assertEqual(len(rules), 1)
        self.assertEqual(rules[0]["apiGroups"], ["fluxadmit.io"])
        self.assertEqual(rules[0]["scope"], "Cluster")
        self.assertEqual(policy_rules(render()), [])


class Policies(unittest.TestCase):
    def configmap(self, values=None) -> dict[str, str]:
        return one(render(values), "ConfigMap")["data"]

    def test_defaults_in_configmap(self):
        data = self.configmap()
        self.assertEqual(data, {p.name: p.read_text() for p in sorted((REPO / "policies").glob("*.yaml"))})

    def test_examples_and_extra_policies(self):
        extra = "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\nmetadata: {name: mine}\n"
        data = self.configmap({"examplePolicies": ["tiered-deployment", "wiz-kubernetes-integration"],
                               "extraPolicies": {"mine.yaml": extra}})
        examples = REPO / "policies" / "examples"
        self.assertEqual(data["tiered-deployment.yaml"], (examples / "tiered-deployment.yaml").read_text())
        self.assertEqual(data["wiz-kubernetes-integration.yaml"],
                         (examples / "wiz-kubernetes-integration.yaml").read_text())
        self.assertEqual(data["mine.yaml"], extra)
        self.assertIn("flux-dependencies.yaml", data)
        self.assertNotIn("pod-security-baseline.yaml", data)

    def test_exclude_defaults(self):
        data = self.configmap({"defaultPolicies": {"exclude": ["restricted-security-context"]}})
        self.assertEqual(set(data), {"flux-dependencies.yaml", "flux-referenced-secrets.yaml"})
        self.assertEqual(one(render({"defaultPolicies": {"enabled": False}}), "ConfigMap").get("data") or {}, {})

    def test_bad_extra_policies_are_rejected(self):
        with self.assertRaises(helm.HelmValuesError):
            render({"extraPolicies": {"no-extension": "x"}})  # the loader would silently skip it
        with self.assertRaisesRegex(helm.HelmRenderError, "clashes"):
            render({"extraPolicies": {"flux-dependencies.yaml": "x"}})

    def test_chart_copies_equal_repo_policies(self):
        for sub in ("", "examples"):
            repo_dir, chart_dir = REPO / "policies" / sub, CHART / "policies" / sub
            repo_files = {p.name: p.read_bytes() for p in repo_dir.glob("*.yaml")}
            chart_files = {p.name: p.read_bytes() for p in chart_dir.glob("*.yaml")}
            self.assertTrue(repo_files, repo_dir)
            self.assertEqual(sorted(chart_files), sorted(repo_files),
                             f"charts/fluxadmit/policies/{sub} is out of sync with policies/{sub}: "
                             f"cp policies/{sub}/*.yaml charts/fluxadmit/policies/{sub}/")
            for name in repo_files:
                self.assertEqual(chart_files[name], repo_files[name],
                                 f"charts/fluxadmit/policies/{sub}/{name} differs from policies/{sub}/{name}")

    def test_schema_enums_list_the_shipped_policies(self):
        props = json.loads((CHART / "values.schema.json").read_text())["properties"]
        examples = sorted(p.stem for p in (REPO / "policies" / "examples").glob("*.yaml"))
        defaults = sorted(p.stem for p in (REPO / "policies").glob("*.yaml"))
        self.assertEqual(sorted(props["examplePolicies"]["items"]["enum"]), examples)
        self.assertEqual(sorted(props["defaultPolicies"]["properties"]["exclude"]["items"]["enum"]), defaults)
        self.assertEqual(chart().values["defaultPolicies"]["exclude"], [])


class Crd(unittest.TestCase):
    CRD_FILE = CHART / "crds" / "deploymentpolicies.fluxadmit.io.yaml"

    def test_crd_is_shipped(self):
        crds = chart().crds
        self.assertEqual([c["filename"] for c in crds], ["fluxadmit/crds/deploymentpolicies.fluxadmit.io.yaml"])
        crd = yaml.safe_load(self.CRD_FILE.read_text())
        self.assertEqual(crd["kind"], "CustomResourceDefinition")
        self.assertEqual(crd["metadata"]["name"], "deploymentpolicies.fluxadmit.io")
        self.assertEqual(crd["spec"]["names"]["kind"], "DeploymentPolicy")
        for p in (CHART / "policies").rglob("*.yaml"):
            doc = yaml.safe_load(p.read_text())
            self.assertEqual(doc["apiVersion"], f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}", p)

    def test_crd_equals_binary_output(self):
        binary = find_binary()
        if binary is None:
            self.skipTest("no fluxadmit binary (target/debug, target/release or $FLUXADMIT_BIN): the CRD "
                          "copy was not compared with `fluxadmit crd`; run `cargo build` first")
        out = subprocess.run([binary, "crd"], capture_output=True, text=True, timeout=60, check=True).stdout
        self.assertEqual(self.CRD_FILE.read_text(), out,
                         f"charts/fluxadmit/crds differs from `fluxadmit crd` ({binary}): "
                         f"{binary.relative_to(REPO) if binary.is_relative_to(REPO) else binary} crd > {self.CRD_FILE.relative_to(REPO)}")


def kubelet_volume(root: Path, files: dict[str, bytes]) -> None:
    """Lays files out like the kubelet's atomic writer: ..<ts>/, ..data -> ..<ts>, name -> ..data/name."""
    ts = root / "..2026_01_01_00_00_00.000000001"
    ts.mkdir(parents=True)
    for name, data in files.items():
        (ts / name).write_bytes(data)
    (root / "..data").symlink_to(ts.name)
    for name in files:
        (root / name).symlink_to(f"..data/{name}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def https_request(port: int, ca_pem: str, hostname: str, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cadata=ca_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=hostname) as s:
            head = (f"{method} {path} HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
            s.sendall(head.encode() + body)
            chunks = []
            while True:
                try:
                    chunk = s.recv(65536)
                except ssl.SSLZeroReturnError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
    raw_resp = b"".join(chunks)
    status = int(raw_resp.split(b" ", 2)[1])
    return status, raw_resp.split(b"\r\n\r\n", 1)[1]


class EndToEnd(unittest.TestCase):
    """The real binary with the chart's rendered args, Secret and ConfigMap (laid out as the
    kubelet mounts them), without --watch (no cluster here)."""

    def test_binary_serves_the_rendered_chart(self):
        binary = find_binary()
        if binary is None:
            self.skipTest("no fluxadmit binary (target/debug, target/release or $FLUXADMIT_BIN)")
        extra = ("apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\nmetadata: {name: chart-test-team}\n"
                 "spec:\n  match: {resources: [{apiGroups: [helm.toolkit.fluxcd.io], kinds: [HelmRelease]}]}\n"
                 "  rules: [{name: team, requiredLabels: {labels: [team]}}]\n")
        examples = sorted(p.stem for p in (CHART / "policies" / "examples").glob("*.yaml"))
        docs = render({"examplePolicies": examples, "extraPolicies": {"team.yaml": extra},
                       "server": {"drain": "1s"}})
        secret = {k: base64.b64decode(v) for k, v in one(docs, "Secret")["data"].items()}
        policies = {k: v.encode() for k, v in one(docs, "ConfigMap")["data"].items()}
        args = [a for a in container(docs)["args"] if a not in ("--watch", "--watch-configmaps")]
        port, metrics = free_port(), free_port()
        with tempfile.TemporaryDirectory() as d:
            kubelet_volume(Path(d, "certs"), secret)
            kubelet_volume(Path(d, "policies"), policies)
            for flag, value in (("--cert-dir", f"{d}/certs"), ("--policies", f"{d}/policies"),
                                ("--addr", f"127.0.0.1:{port}"), ("--metrics-addr", f"127.0.0.1:{metrics}")):
                args[args.index(flag) + 1] = value
            env = dict(os.environ, FLUXADMIT_NAMESPACE=NAMESPACE)
            log = Path(d, "fluxadmit.log")
            with log.open("wb") as err:
                proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=err, env=env)
            try:
                ca = secret["ca.crt"].decode()
                deadline = time.monotonic() + 30
                while True:
                    if proc.poll() is not None:
                        self.fail(f"fluxadmit exited {proc.returncode}: {log.read_text()[-2000:]}")
                    try:
                        status, _ = https_request(port, ca, SVC_DNS[0], "GET", "/readyz")
                        if status == 200:
                            break
                    except OSError:
                        pass
                    self.assertLess(time.monotonic(), deadline, "fluxadmit did not become ready")
                    time.sleep(0.2)
                status, _ = https_request(port, ca, SVC_DNS[1], "GET", "/healthz")
                self.assertEqual(status, 200)
                review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                    "uid": "chart-test", "operation": "CREATE", "name": "api", "namespace": "apps",
                    "kind": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "kind": "HelmRelease"},
                    "resource": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "resource": "helmreleases"},
                    "userInfo": {"username": "test"},
                    "object": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                               "metadata": {"name": "api", "namespace": "apps"},
                               "spec": {"interval": "10m", "dependsOn": [{"name": "api"}],
                                        "chart": {"spec": {"chart": "api", "sourceRef": {
                                            "kind": "HelmRepository", "name": "r"}}}}}}}
                status, body = https_request(port, ca, SVC_DNS[0], "POST", "/validate", json.dumps(review).encode())
                self.assertEqual(status, 200, body)
                response = json.loads(body)["response"]
                self.assertFalse(response["allowed"])
                message = response["status"]["message"]
                self.assertIn("flux-dependencies", message)  # a default policy from the ConfigMap
                self.assertIn("chart-test-team", message)  # extraPolicies
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    code = None
            self.assertEqual(code, 0, log.read_text()[-2000:])


if __name__ == "__main__":
    unittest.main()
