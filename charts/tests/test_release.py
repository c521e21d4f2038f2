"""The chart installs what the release workflow publishes: its default image is the
repository .github/workflows/release.yaml pushes to, and its appVersion (the default tag)
is the crate's version, which the workflow requires the release tag to equal."""

from __future__ import annotations

import tomllib
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fluxadmit"


def crate_version() -> str:
    """The fluxadmit package's version (the root package's, or the workspace's it inherits)."""
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    version = manifest["package"]["version"]
    if isinstance(version, dict) and version.get("workspace"):
        version = manifest["workspace"]["package"]["version"]
    return version


class Release(unittest.TestCase):
    def test_app_version_is_the_crate_version(self):
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        self.assertEqual(str(chart["appVersion"]), crate_version())

    def test_default_image_is_the_published_repository(self):
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        workflow = yaml.safe_load((ROOT / ".github/workflows/release.yaml").read_text())
        image = workflow["jobs"]["image"]["env"]["IMAGE"]
        self.assertEqual(image, "ghcr.io/${{ github.repository_owner }}/fluxadmit")
        repo = values["image"]["repository"]
        self.assertRegex(repo, r"^ghcr\.io/[a-z0-9-]+/fluxadmit$")

    def test_workflow_builds_both_architectures_signed_with_sbom_and_provenance(self):
        workflow = yaml.safe_load((ROOT / ".github/workflows/release.yaml").read_text())
        steps = workflow["jobs"]["image"]["steps"]
        build = next(s for s in steps if s.get("id") == "build")
        self.assertEqual(build["with"]["platforms"], "linux/amd64,linux/arm64")
        self.assertTrue(build["with"]["sbom"])
        self.assertIn("mode=max", build["with"]["provenance"])
        self.assertTrue(any("cosign sign" in s.get("run", "") for s in steps))
        self.assertEqual(workflow["jobs"]["image"]["permissions"]["id-token"], "write")

    def test_dependabot_covers_images_crates_and_actions(self):
        config = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text())
        ecosystems = {u["package-ecosystem"] for u in config["updates"]}
        self.assertEqual(ecosystems, {"docker", "cargo", "github-actions"})


if __name__ == "__main__":
    unittest.main()
