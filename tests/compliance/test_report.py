"""`esm report`: compliance reports from a data set made through esm itself (init, cert
issue, entries over the admin socket, policy reloads, ext_authz decisions from a real Envoy
over gRPC). A clean data set fails only the key-custody controls (the file key backend is a
finding); a data set with known violations fails exactly the controls they belong to; a
deleted audit event fails every control; edited reports do not verify. The JSON validates
against its schema, the OSCAL loads with compliance-trestle, the HTML renders in headless
Chromium without console errors."""

import datetime
import json
import os
import pathlib
import re
import shutil

import pytest

from conftest import ROOT, run
from envoy_harness import bootstrap, free_port, request, route, stop_process, wait_for

TD = "example.org"
API = f"spiffe://{TD}/ns/prod/sa/api"
WEB = f"spiffe://{TD}/ns/prod/sa/web"
OTHER = f"spiffe://{TD}/ns/prod/sa/other"
LONG = f"spiffe://{TD}/ns/batch/sa/long-lived"
GOLDEN = pathlib.Path(__file__).parent / "golden"
SCHEMA = ROOT / "report" / "schema" / "report.schema.json"

TODAY = datetime.datetime.now(datetime.timezone.utc).date().isoformat()

SOC2_CLEAN_FAILS = {"CC6.1"}
ISO_CLEAN_FAILS = {"8.24"}
# key custody (file backend) + SVID TTL + unknown caller + dry-run + a policy change nobody is named for
SOC2_VIOLATION_FAILS = {"CC6.1", "CC6.2", "CC6.3", "CC6.6", "CC6.7", "CC6.8", "CC7.1", "CC8.1"}
ISO_VIOLATION_FAILS = {"5.15", "5.16", "5.17", "5.18", "8.2", "8.3", "8.5", "8.20", "8.24", "8.32"}


def issue(data, spiffe_id, out, ttl=None, env=None):
    args = ["cert", "issue", "--spiffe-id", spiffe_id, "--out", out, "--dir", data]
    if ttl:
        args += ["--ttl", ttl]
    run(*args, env=env)
    return {"cert": out / "svid.pem", "key": out / "svid.key", "ca": out / "bundle.pem"}


def policy_reloads(data):
    out = run("audit", "tail", "-n", "1000", "--dir", data).stdout
    events = [json.loads(l) for l in out.splitlines() if l.strip()]
    return [e for e in events if e["kind"] == "policy.changed" and e["outcome"] == "success"]


def grant_db(data):
    """A user adds a grant to data.json (written beside it, renamed into place)."""
    grants = json.loads((data / "policies" / "data.json").read_text())
    grants["services"][f"spiffe://{TD}/ns/prod/sa/db"] = {"callers": [{"spiffe_id": API}]}
    tmp_file = data / "data.json.new"
    tmp_file.write_text(json.dumps(grants))
    os.rename(tmp_file, data / "policies" / "data.json")


def build(tmp, stack, violations):
    """A data set made only through esm: returns (data dir, extra --policies dirs)."""
    esm, envoy, up = stack
    data = tmp / "d"
    run("init", "--trust-domain", TD, "--dir", data)
    server = issue(data, API, tmp / "api")
    web = issue(data, WEB, tmp / "web")
    routes = [route("/")]
    extra = []
    if violations:
        other = issue(data, OTHER, tmp / "other")
        # The maximum was raised for this one issuance, then set back to 24 h.
        issue(data, LONG, tmp / "long", ttl="36h", env={"ESM_CA_SVID_MAX_TTL": "48h"})
        # Removed later: a change that writes nothing names no one.
        (data / "policies" / "extra.rego").write_text('package envoy.authz.extra\nnote := "removed later"\n')
        canary = data / "policies-canary"
        canary.mkdir()
        (canary / "deny.rego").write_text("package envoy.authz\nimport rego.v1\ndefault allow := false\n")
        with open(data / "esm.toml", "a") as f:
            f.write('\n[authz.sets.canary]\npolicy_dir = "policies-canary"\ndry_run = true\n')
        routes = [route("/canary", "canary"), route("/")]
    p, authz, _ = esm(data)
    run("entry", "create", "--spiffe-id", WEB, "--selector", "unix:uid:1000", "--dir", data)
    run("entry", "create", "--spiffe-id", API, "--selector", "unix:uid:1001", "--dir", data)
    port = free_port()
    e = envoy(bootstrap(free_port(), authz, up, http_port=port, routes=routes,
                        tls=(server["cert"], server["key"], server["ca"])))
    for _ in range(3):
        assert request(port, "GET", "/items/7", tls=web)[0] == 200
    assert request(port, "DELETE", "/items/7", tls=web)[0] == 403
    old = tmp / "policies-before"
    shutil.copytree(data / "policies", old)
    extra.append(old)
    # A user changes the grants: the reload is attributed to the file's owner.
    grant_db(data)
    wait_for(lambda: len(policy_reloads(data)) == 1, "the policy reload")
    assert request(port, "GET", "/items/8", tls=web)[0] == 200          # under the new policy
    if violations:
        assert request(port, "GET", "/items/7", tls=other)[0] == 403          # no entry
        assert request(port, "GET", "/canary/x", tls=web)[0] == 200          # dry-run
        middle = tmp / "policies-middle"
        shutil.copytree(data / "policies", middle)
        extra.append(middle)
        # A file removed: nobody's file was written, so nobody is named (uid:unknown).
        (data / "policies" / "extra.rego").unlink()
        wait_for(lambda: len(policy_reloads(data)) == 2, "the second policy reload")
    e.stop()
    stop_process(p)  # the writer's final checkpoint covers everything
    return data, extra


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Both data sets, built once (each runs esm serve and an Envoy)."""
    from conftest import ESM
    from envoy_harness import Envoy, start_upstream

    assert ESM.exists()
    built = {}
    for name, violations in [("clean", False), ("violations", True)]:
        tmp = tmp_path_factory.mktemp(name)
        started = []

        def esm(data, env=None):
            import subprocess
            from envoy_harness import wait_path, wait_port
            authz, admin = free_port(), free_port()
            full = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")}
            full.update(env or {})
            full["ESM_ADMIN_LISTEN"] = f"127.0.0.1:{admin}"
            full["ESM_AUTHZ_LISTEN"] = f"127.0.0.1:{authz}"
            log = open(tmp / "esm.log", "w")
            proc = subprocess.Popen([str(ESM), "serve", "--dir", str(data)], env=full,
                                    stdout=log, stderr=log)
            started.append(proc)
            wait_port(authz)
            # The admin socket opens after the ext_authz port: `esm entry` needs it.
            wait_path(data / "admin.sock", proc)
            return proc, authz, admin

        def envoy(config):
            e = Envoy(tmp, config)
            started.append(e)
            return e

        upstream, up_port = start_upstream()
        try:
            built[name] = (tmp, *build(tmp, (esm, envoy, up_port), violations))
        finally:
            upstream.shutdown()
            for p in reversed(started):
                p.stop() if isinstance(p, Envoy) else stop_process(p)
    return built


def report(data, out, framework="soc2", fmt="json", frm=TODAY, to=TODAY, extra=(), check=False):
    args = ["report", "--framework", framework, "--from", frm, "--to", to, "--format", fmt,
            "--out", out, "--dir", data]
    for e in extra:
        args += ["--policies", e]
    return run(*args, check=check)


def failed_controls(doc):
    return {c["id"] for c in doc["controls"] if c["status"] in ("failed", "insufficient_evidence")}


def check(doc, control, check_id):
    c = next(c for c in doc["controls"] if c["id"] == control)
    return next(k for k in c["checks"] if k["id"] == check_id)


def test_clean_dataset_fails_only_key_custody(datasets):
    tmp, data, extra = datasets["clean"]
    for framework, expected in [("soc2", SOC2_CLEAN_FAILS), ("iso27001", ISO_CLEAN_FAILS)]:
        out = tmp / f"clean-{framework}.json"
        p = report(data, out, framework, extra=extra)
        assert p.returncode == 1, p.stderr
        doc = json.loads(out.read_text())
        assert doc["integrity"]["verified"] is True
        assert failed_controls(doc) == expected
    doc = json.loads((tmp / "clean-soc2.json").read_text())
    custody = check(doc, "CC6.1", "ca.key_custody")
    assert custody["status"] == "failed" and "file" in custody["exceptions"][0]["message"]
    assert check(doc, "CC6.1", "authz.deny_by_default")["status"] == "passed"
    assert check(doc, "CC6.6", "authz.known_callers")["counts"]["decisions"] == 5
    # The grant a user changed: the reload names the owner of data.json, not esm's watcher.
    changes = check(doc, "CC8.1", "change.attributed")
    assert changes["status"] == "passed" and changes["counts"]["policy"] == 1, changes
    reload = policy_reloads(data)[0]
    assert reload["actor"] == f"uid:{os.getuid()}" and reload["details"]["changed.via"] == "esm:policy-reload"
    assert reload["details"]["changed.written"] == ["data.json"] and reload["details"]["policy.hash"]
    assert reload["seq"] in changes["sample"]
    assert doc["scope"]["parameters"]["svid_max_ttl_secs"] == 86400


def test_clean_dataset_passes_a_framework_without_key_custody(datasets):
    """Exit 0 when every control passes: the user's own framework file, minus CC6.1."""
    tmp, data, extra = datasets["clean"]
    text = (ROOT / "report" / "frameworks" / "soc2.toml").read_text()
    own = re.sub(r'\[\[controls\]\]\nid = "CC6\.1".*?(?=\[\[controls\]\])', "", text, flags=re.S)
    assert 'id = "CC6.1"' not in own
    (tmp / "own.toml").write_text(own)
    out = tmp / "own.md"
    p = report(data, out, str(tmp / "own.toml"), "md", extra=extra)
    assert p.returncode == 0, p.stderr
    assert "| Result | **PASS** |" in out.read_text()


def test_violations_fail_exactly_their_controls(datasets):
    tmp, data, extra = datasets["violations"]
    docs = {}
    for framework, expected in [("soc2", SOC2_VIOLATION_FAILS), ("iso27001", ISO_VIOLATION_FAILS)]:
        out = tmp / f"v-{framework}.json"
        p = report(data, out, framework, extra=extra)
        assert p.returncode == 1 and "controls failed" in p.stderr, p.stderr
        docs[framework] = doc = json.loads(out.read_text())
        assert doc["integrity"]["verified"] is True
        assert failed_controls(doc) == expected
    doc = docs["soc2"]
    ttl = check(doc, "CC6.7", "svid.ttl_within_max")
    assert [x["message"].split(" lives")[0] for x in ttl["exceptions"]] == [f"SVID for {LONG}"]
    callers = check(doc, "CC6.2", "authz.known_callers")
    assert len(callers["exceptions"]) == 1 and OTHER in callers["exceptions"][0]["message"]
    enforced = check(doc, "CC6.3", "authz.enforced")
    assert len(enforced["exceptions"]) == 1 and "policy set canary in dry-run" in enforced["exceptions"][0]["message"]
    # The user's grant change is attributed; the removal (no file written) names no one.
    changes = check(doc, "CC8.1", "change.attributed")
    attributed, removal = policy_reloads(data)
    assert attributed["seq"] in changes["sample"], changes
    assert [x["seq"] for x in changes["exceptions"]] == [removal["seq"]]
    assert "uid:unknown names no one" in changes["exceptions"][0]["message"]
    assert removal["details"]["changed.removed"] == ["extra.rego"]
    # Both policy versions in force were examined (the old one from --policies): no gap.
    assert check(doc, "CC6.1", "authz.deny_by_default")["status"] == "passed"
    # Every exception points at an event `esm audit prove` can prove.
    seq = callers["exceptions"][0]["seq"]
    proof = json.loads(run("audit", "prove", seq, "--dir", data).stdout)
    assert proof["seq"] == seq


def test_without_the_old_policy_deny_by_default_lacks_evidence(datasets):
    tmp, data, _ = datasets["violations"]
    out = tmp / "no-old.json"
    report(data, out, "iso27001")
    c = check(json.loads(out.read_text()), "5.15", "authz.deny_by_default")
    assert c["status"] == "insufficient_evidence"
    assert "not available to examine" in c["exceptions"][0]["message"]


def tampered_copy(tmp, data):
    copy = tmp / "tampered"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns("*.sock"))
    import sqlite3
    c = sqlite3.connect(copy / "audit.db")
    c.executescript("DROP TRIGGER IF EXISTS events_no_delete; DELETE FROM events WHERE seq = 5;")
    c.commit()
    c.close()
    return copy


def test_deleted_audit_event_fails_every_control_in_every_format(datasets):
    tmp, data, extra = datasets["violations"]
    copy = tampered_copy(tmp, data)
    for fmt in ["json", "md", "html", "oscal"]:
        out = tmp / f"tampered.{fmt}"
        p = report(copy, out, "iso27001", fmt, extra=extra)
        assert p.returncode == 1 and "does not verify" in p.stderr, p.stderr
        text = out.read_text()
        if fmt == "json":
            doc = json.loads(text)
            assert doc["integrity"]["verified"] is False
            assert "5" in doc["integrity"]["reason"]
            assert {c["status"] for c in doc["controls"]} == {"failed"}
            assert check(doc, "8.15", "audit.chain_verifies")["status"] == "failed"
        elif fmt == "oscal":
            doc = json.loads(text)["assessment-results"]
            assert doc["metadata"]["remarks"].startswith("THE AUDIT LOG DOES NOT VERIFY")
            states = {f["target"]["status"]["state"] for f in doc["results"][0]["findings"]}
            assert states == {"not-satisfied"}
        else:
            head = text[:2000]
            assert "THE AUDIT LOG DOES NOT VERIFY" in head
    soc2 = tmp / "tampered-soc2.json"
    report(copy, soc2, "soc2", extra=extra)
    doc = json.loads(soc2.read_text())
    assert next(c for c in doc["controls"] if c["id"] == "CC7.2")["status"] == "failed"


def test_edited_report_does_not_verify(datasets):
    tmp, data, extra = datasets["violations"]
    for fmt in ["json", "md", "html", "oscal"]:
        out = tmp / f"sealed.{fmt}"
        report(data, out, "soc2", fmt, extra=extra)
        ok = run("report", "verify", out, "--dir", data, check=False)
        assert ok.returncode == 0 and ok.stdout.startswith("ok:"), ok.stderr
        text = out.read_text()
        # The attack: turn a failed control into a passed one.
        edited = tmp / f"edited.{fmt}"
        assert '"failed"' in text or "failed" in text
        edited.write_text(text.replace("failed", "passed", 1))
        bad = run("report", "verify", edited, "--dir", data, check=False)
        assert bad.returncode == 1 and "edited" in bad.stderr, bad.stderr
    # A checkpoint not signed by this log's key: verified against another key, refused.
    other = tmp / "other-key"
    run("init", "--trust-domain", TD, "--dir", other)
    bad = run("report", "verify", tmp / "sealed.json", "--public-key", other / "audit" / "checkpoint.pub",
              "--dir", data, check=False)
    assert bad.returncode == 1 and "signature" in bad.stderr


def normalise(text, tmp):
    text = text.replace(str(tmp), "<tmp>")
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<time>", text)
    text = re.sub(r"\b\d{4}-\d\d-\d\d\b", "<date>", text)
    text = re.sub(r"\b[0-9a-f]{16,}\b", "<hex>", text)
    text = re.sub(r'"time_ns": \d+', '"time_ns": 0', text)
    text = re.sub(r"(Nodes \| )[^|]*\|", r"\1<nodes> |", text)
    text = re.sub(r'("nodes": \[)[^\]]*\]', r'\1"<nodes>"]', text)
    text = re.sub(r"(\d+ s|\d+s) \((seq|before)", r"<secs> \2", text)
    return text


@pytest.mark.parametrize("fmt", ["md", "json"])
def test_golden_report(datasets, fmt):
    tmp, data, extra = datasets["violations"]
    out = tmp / f"golden.{fmt}"
    report(data, out, "soc2", fmt, extra=extra)
    got = normalise(out.read_text(), tmp)
    golden = GOLDEN / f"report_soc2_violations.{fmt}"
    if os.environ.get("ESM_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text()


def test_json_validates_against_its_schema(datasets):
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    tmp, data, extra = datasets["violations"]
    for framework in ["soc2", "iso27001"]:
        out = tmp / f"schema-{framework}.json"
        report(data, out, framework, extra=extra)
        doc = json.loads(out.read_text())
        jsonschema.validate(doc, schema, format_checker=jsonschema.FormatChecker())
        # The schema is strict: an unknown field or a bad status is refused.
        doc["controls"][0]["status"] = "fine"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)


def test_oscal_loads_with_compliance_trestle(datasets):
    from trestle.oscal.assessment_results import AssessmentResults

    tmp, data, extra = datasets["violations"]
    out = tmp / "ar.json"   # trestle reads by extension
    report(data, out, "iso27001", "oscal", extra=extra)
    ar = AssessmentResults.oscal_read(out)
    assert "1.1.2" in str(ar.metadata.oscal_version)
    assert len(ar.results) == 1
    result = ar.results[0]
    assert result.start is not None and result.end is not None
    selected = [c.control_id for c in result.reviewed_controls.control_selections[0].include_controls]
    assert selected == ["a.5.15", "a.5.16", "a.5.17", "a.5.18", "a.5.28", "a.5.33", "a.8.2", "a.8.3",
                        "a.8.5", "a.8.15", "a.8.16", "a.8.17", "a.8.20", "a.8.24", "a.8.32"]
    by_target = {f.target.target_id: f.target.status.state.value for f in result.findings}
    not_satisfied = {t.removeprefix("a.").removesuffix("_obj") for t, s in by_target.items()
                     if s == "not-satisfied"}
    assert not_satisfied == ISO_VIOLATION_FAILS
    observations = {o.uuid: o for o in result.observations}
    for f in result.findings:
        for rel in f.related_observations:
            assert rel.observation_uuid in observations
    hrefs = [e.href for o in result.observations for e in (o.relevant_evidence or [])]
    assert hrefs and all(re.fullmatch(r"urn:esm:audit:seq:\d+", h) for h in hrefs)
    # Round trip through trestle's own writer and back.
    again = tmp / "ar-again.json"
    ar.oscal_write(again)
    assert AssessmentResults.oscal_read(again).uuid == ar.uuid


def test_from_after_to_unknown_framework_and_bad_date_are_usage_errors(datasets):
    tmp, data, _ = datasets["clean"]
    for args, msg in [
        (["--framework", "soc2", "--from", "2026-02-01", "--to", "2026-01-01"], "after"),
        (["--framework", "pci-dss", "--from", "2026-01-01", "--to", "2026-01-02"], "framework"),
        (["--framework", "soc2", "--from", "last week", "--to", "2026-01-02"], "--from"),
    ]:
        p = run("report", *args, "--format", "json", "--out", tmp / "x.json", "--dir", data, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run("report", "--framework", "soc2", "--from", "2026-01-01", "--to", "2026-01-02",
            "--format", "json", "--out", tmp / "x.json", "--dir", tmp / "nowhere", check=False)
    assert p.returncode == 2
    bad_store = tmp / "bad-store"
    shutil.copytree(data, bad_store, ignore=shutil.ignore_patterns("*.sock"))
    for f in bad_store.glob("audit.db*"):
        f.unlink()
    (bad_store / "audit.db").write_bytes(b"this is not a database" * 100)
    p = run("report", "--framework", "soc2", "--from", "2026-01-01", "--to", "2026-01-02",
            "--format", "json", "--out", tmp / "x.json", "--dir", bad_store, check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_empty_period_has_no_passing_evidence(datasets):
    tmp, data, _ = datasets["clean"]
    out = tmp / "empty.json"
    p = report(data, out, "soc2", frm="2001-01-01", to="2001-01-31")
    doc = json.loads(out.read_text())
    assert doc["scope"]["events_in_period"] == 0
    statuses = {k["status"] for c in doc["controls"] for k in c["checks"] if not k["id"].startswith("manual.")}
    # Nothing happened: checks are not applicable, or lack evidence (and then fail the run).
    assert statuses <= {"not_applicable", "insufficient_evidence", "passed"}
    assert all(k["status"] != "passed" or k["id"] == "audit.chain_verifies"
               for c in doc["controls"] for k in c["checks"])
    assert p.returncode == (1 if failed_controls(doc) else 0)


def chromium_render(tmp, html):
    """Headless Chromium: (console error lines, screenshot PNG bytes)."""
    import subprocess

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is missing (tests/run installs it)"
    profile = tmp / f"chromium-profile-{html.stem}"
    shot = tmp / f"{html.stem}.png"
    p = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--window-size=1200,2400",
         f"--screenshot={shot}", html.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    errors = [l for l in p.stderr.splitlines() if "CONSOLE" in l or "Refused to" in l]
    return errors, shot.read_bytes()


def png_pixels(data):
    """Decodes an 8-bit RGB(A) non-interlaced PNG (what Chromium writes): rows of pixels."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(line)
        prev = line
    return rows, channels


def coloured_share(png):
    rows, ch = png_pixels(png)
    total = coloured = 0
    for row in rows[::4]:
        for i in range(0, len(row), ch * 4):
            total += 1
            coloured += row[i:i + 3] != b"\xff\xff\xff"
    return coloured / total


def test_html_renders_in_headless_chromium_without_console_errors(datasets):
    tmp, data, extra = datasets["violations"]
    out = tmp / "report.html"
    report(data, out, "soc2", "html", extra=extra)
    text = out.read_text()
    assert "<svg" in text and text.count("<svg") == 4
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the report fetches nothing"
    errors, png = chromium_render(tmp, out)
    assert errors == [], errors
    assert coloured_share(png) > 0.02, "the screenshot is blank"
    # The detector works: a page that logs an error and one that draws nothing are caught.
    bad = tmp / "console-error.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('boom')</script></body></html>")
    errors, _ = chromium_render(tmp, bad)
    assert any("boom" in e for e in errors), errors
    blank = tmp / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    _, png = chromium_render(tmp, blank)
    assert coloured_share(png) < 0.001
