"""The hook runner's VDSM semantics: discovery, environment, data hand-over, exit codes,
timeouts — each checked through the synchronous and the asyncio entry point alike."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from hooks import points
from hooks.runner import (
    BACKEND_PYLIB,
    PYLIB,
    HookConfig,
    HookError,
    find_scripts,
    installed,
    run_hooks,
    run_hooks_async,
)
from tests.support.procs import alive

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "/usr/bin/env python3"


def script(root, point: str, name: str, body: str, mode: int = 0o755) -> str:
    folder = os.path.join(str(root), point)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(body)
    os.chmod(path, mode)
    return path


def sh(code: str) -> str:
    return "#!/bin/sh\n" + code + "\n"


def py(code: str) -> str:
    return f"#!{PY}\n" + code + "\n"


@pytest.fixture(params=["sync", "async"])
def run(request):
    """run(point, data, **kw) through run_hooks or run_hooks_async."""
    if request.param == "sync":
        return run_hooks

    def via_asyncio(*a, **kw):
        return asyncio.run(run_hooks_async(*a, **kw))

    return via_asyncio


def cfg(root, **kw) -> HookConfig:
    return HookConfig(root=str(root), **kw)


# -- discovery -------------------------------------------------------------------------


def test_only_executable_regular_non_dot_files_run_in_sorted_order(tmp_path):
    script(tmp_path, "before_vm_start", "20_b", sh("true"))
    script(tmp_path, "before_vm_start", "10_a", sh("true"))
    script(tmp_path, "before_vm_start", "Z_upper", sh("true"))
    script(tmp_path, "before_vm_start", "30_not_executable", sh("true"), mode=0o644)
    script(tmp_path, "before_vm_start", ".hidden", sh("true"))
    os.mkdir(tmp_path / "before_vm_start" / "40_a_directory")
    names = [os.path.basename(p) for p in find_scripts(str(tmp_path), "before_vm_start")]
    assert names == ["10_a", "20_b", "Z_upper"]


def test_hook_dir_names_that_are_absolute_or_climb_are_refused(tmp_path):
    with pytest.raises(ValueError, match="absolute"):
        find_scripts(str(tmp_path), "/etc")
    with pytest.raises(ValueError, match=r"\.\."):
        find_scripts(str(tmp_path), "before_vm_start/../../etc")


def test_unknown_point_names_are_refused_with_a_suggestion(tmp_path):
    with pytest.raises(points.UnknownHookPoint, match="before_vm_start"):
        run_hooks("before_vm_strat", "<domain/>", config=cfg(tmp_path))


def test_without_scripts_the_data_comes_back_untouched(tmp_path, run):
    result = run("before_vm_start", "<domain/>", config=cfg(tmp_path))
    assert result.data == "<domain/>" and result.scripts == []


def test_installed_lists_every_folder_with_scripts(tmp_path):
    script(tmp_path, "before_vm_start", "50_x", sh("true"))
    script(tmp_path, "after_get_caps", "50_y", sh("true"))
    os.mkdir(tmp_path / "after_vm_start")
    assert installed(str(tmp_path)) == {"after_get_caps": ["50_y"], "before_vm_start": ["50_x"]}


# -- data hand-over --------------------------------------------------------------------


def test_each_script_sees_the_previous_ones_edit_and_the_last_edit_is_returned(tmp_path, run):
    script(tmp_path, "before_vm_start", "10_a", sh('sed -i "s|</domain>|<a/></domain>|" "$_hook_domxml"'))
    script(tmp_path, "before_vm_start", "20_b", sh('grep -q "<a/>" "$_hook_domxml" || exit 1\n'
                                                   'sed -i "s|</domain>|<b/></domain>|" "$_hook_domxml"'))
    result = run("before_vm_start", "<domain></domain>", config=cfg(tmp_path))
    assert result.data.strip() == "<domain><a/><b/></domain>"
    assert [s.changed for s in result.scripts] == [True, True]
    assert all(s.returncode == 0 for s in result.scripts)


def test_the_data_file_is_removed_after_the_run(tmp_path, run):
    record = tmp_path / "path"
    script(tmp_path, "before_vm_start", "10", sh(f'echo "$_hook_domxml" > {record}'))
    run("before_vm_start", "<domain/>", config=cfg(tmp_path))
    assert not os.path.exists(record.read_text().strip())


def test_json_points_pass_json_in_hook_json_and_return_the_parsed_result(tmp_path, run):
    script(tmp_path, "after_get_caps", "10", py(
        "import hooking\n"
        "caps = hooking.read_json()\n"
        "caps['hooked'] = caps['cpus'] * 2\n"
        "hooking.write_json(caps)"))
    result = run("after_get_caps", {"cpus": 4}, config=cfg(tmp_path))
    assert result.data == {"cpus": 4, "hooked": 8}


def test_points_without_payload_get_an_empty_domxml_file(tmp_path, run):
    out = tmp_path / "seen"
    script(tmp_path, "before_vm_destroy", "10", sh(f'wc -c < "$_hook_domxml" > {out}; '
                                                   f'echo "${{_hook_json:-unset}}" >> {out}'))
    run("before_vm_destroy", None, config=cfg(tmp_path), vm_id="v1")
    assert out.read_text().split() == ["0", "unset"]


def test_invalid_json_left_by_a_hook_fails_a_point_that_counts_failures(tmp_path, run):
    script(tmp_path, "after_disk_prepare", "10_broken", sh('echo "{not json" > "$_hook_json"'))
    with pytest.raises(HookError, match="invalid JSON") as e:
        run("after_disk_prepare", {"path": "/x"}, config=cfg(tmp_path))
    assert e.value.script == "10_broken"


def test_invalid_json_at_an_ignoring_point_keeps_the_original(tmp_path, run):
    script(tmp_path, "after_get_stats", "10_broken", sh('echo "{not json" > "$_hook_json"'))
    assert run("after_get_stats", {"a": 1}, config=cfg(tmp_path)).data == {"a": 1}


# -- environment -----------------------------------------------------------------------


def test_scripts_get_params_custom_properties_vmid_and_the_hooking_path(tmp_path, run, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/inherited/path")
    monkeypatch.setenv("KVMD_TEST_INHERITED", "yes")
    out = tmp_path / "env.json"
    script(tmp_path, "before_vm_dehibernate", "10", py(
        f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"))
    run("before_vm_dehibernate", "<domain/>", config=cfg(tmp_path, run_dir="/run/x", uri="test:///default"),
        vm_id="0f0e", custom={"macspoof": "true", "clash": "custom"},
        params={"FROM_SNAPSHOT": "False", "clash": "param"})
    env = json.loads(out.read_text())
    assert env["vmId"] == "0f0e"
    assert env["macspoof"] == "true" and env["FROM_SNAPSHOT"] == "False"
    assert env["clash"] == "custom"  # custom properties win, as in VDSM
    assert env["KVMD_TEST_INHERITED"] == "yes"  # the runner's own environment
    assert os.path.isabs(env["_hook_domxml"]) and "_hook_json" not in env
    assert env["KVMD_HOOKS_RUN_DIR"] == "/run/x" and env["LIBVIRT_DEFAULT_URI"] == "test:///default"
    assert env["PYTHONPATH"].split(os.pathsep) == [BACKEND_PYLIB["libvirt"], "/inherited/path", PYLIB]


def test_kvmd_backend_puts_the_compat_libvirt_folder_first_and_names_the_socket(tmp_path, run):
    out = tmp_path / "pp"
    script(tmp_path, "before_vm_start", "10", sh(f'echo "$PYTHONPATH $KVMD_SOCKET" > {out}'))
    run("before_vm_start", "<domain/>", config=cfg(tmp_path, backend="kvmd", kvmd_socket="/k.sock"))
    path, sock = out.read_text().split()
    first = path.split(os.pathsep)[0]
    assert first == BACKEND_PYLIB["kvmd"] and sock == "/k.sock"
    assert os.path.exists(os.path.join(first, "libvirt.py"))


def test_non_text_values_become_environment_text(tmp_path, run):
    out = tmp_path / "v"
    script(tmp_path, "before_vm_start", "10", sh(f'echo "$flag $n" > {out}'))
    run("before_vm_start", "<domain/>", config=cfg(tmp_path), custom={"flag": True, "n": 3})
    assert out.read_text().split() == ["true", "3"]


def test_scripts_importing_hooking_work_under_env_python3(tmp_path, run):
    script(tmp_path, "before_vm_start", "10", "#!/usr/bin/env python3\n"
           "import hooking\nfrom vdsm.hook import hooking as vh\n"
           "d = hooking.read_domxml(); d.documentElement.setAttribute('ok', str(vh.tobool('1')))\n"
           "vh.write_domxml(d)\n")
    result = run("before_vm_start", "<domain/>", config=cfg(tmp_path))
    assert 'ok="True"' in result.data, result.scripts[0].stderr


# -- exit codes ------------------------------------------------------------------------


def test_exit_code_1_fails_the_operation_but_the_other_scripts_still_run(tmp_path, run):
    ran = tmp_path / "ran"
    script(tmp_path, "before_vm_start", "10_fails", sh("echo 'first reason' >&2; exit 1"))
    script(tmp_path, "before_vm_start", "20_runs", sh(f"touch {ran}"))
    with pytest.raises(HookError) as e:
        run("before_vm_start", "<domain/>", config=cfg(tmp_path))
    assert ran.exists()
    err = e.value
    assert (err.point, err.script, err.returncode) == ("before_vm_start", "10_fails", 1)
    assert err.reason == "first reason" and "first reason" in str(err)
    assert [r.script for r in err.results] == ["10_fails", "20_runs"]


def test_exit_code_2_stops_the_point(tmp_path, run):
    ran = tmp_path / "ran"
    script(tmp_path, "before_vm_cont", "10_stops", sh("echo 'stop here' >&2; exit 2"))
    script(tmp_path, "before_vm_cont", "20_never", sh(f"touch {ran}"))
    with pytest.raises(HookError) as e:
        run("before_vm_cont", "<domain/>", config=cfg(tmp_path))
    assert not ran.exists()
    assert e.value.returncode == 2 and e.value.reason == "stop here"
    assert [r.script for r in e.value.results] == ["10_stops"]


def test_reserved_exit_codes_are_failures_that_let_the_others_run(tmp_path, run, caplog):
    ran = tmp_path / "ran"
    script(tmp_path, "before_vm_pause", "10_odd", sh("exit 7"))
    script(tmp_path, "before_vm_pause", "20_runs", sh(f"touch {ran}"))
    with pytest.raises(HookError) as e:
        run("before_vm_pause", "<domain/>", config=cfg(tmp_path))
    assert ran.exists() and e.value.returncode == 7
    assert "reserved" in e.value.reason  # no stderr: the reason says what happened
    assert "unexpected return code 7" in caplog.text


def test_the_reason_is_the_last_failing_scripts_stderr(tmp_path, run):
    script(tmp_path, "before_nic_hotplug", "10", sh("echo early >&2; exit 1"))
    script(tmp_path, "before_nic_hotplug", "20", sh("echo late >&2; exit 1"))
    script(tmp_path, "before_nic_hotplug", "30", sh("echo 'fine, just chatty' >&2"))
    with pytest.raises(HookError) as e:
        run("before_nic_hotplug", "<interface/>", config=cfg(tmp_path))
    assert e.value.script == "20" and e.value.reason == "late"


def test_before_vm_start_failure_still_carries_the_final_xml(tmp_path, run):
    script(tmp_path, "before_vm_start", "10", sh('sed -i "s|/>|><x/></domain>|" "$_hook_domxml"'))
    script(tmp_path, "before_vm_start", "20", sh("exit 1"))
    with pytest.raises(HookError) as e:
        run("before_vm_start", "<domain/>", config=cfg(tmp_path))
    assert "<x/>" in e.value.data


@pytest.mark.parametrize("point", ["after_vm_start", "before_vm_destroy", "before_vm_set_ticket",
                                   "after_vdsm_stop", "after_get_caps"])
def test_failures_at_points_vdsm_ignores_do_not_fail_the_operation(tmp_path, run, point, caplog):
    script(tmp_path, point, "10", sh("echo nope >&2; exit 2"))
    data = {} if points.get(point).carries_json else "<domain/>"
    result = run(point, data, config=cfg(tmp_path))
    assert [f.stderr for f in result.failures] == ["nope\n"]
    assert "ignored at this point" in caplog.text


def test_raise_errors_overrides_the_points_default(tmp_path, run):
    script(tmp_path, "after_vm_start", "10", sh("exit 1"))
    with pytest.raises(HookError):
        run("after_vm_start", "<domain/>", config=cfg(tmp_path), raise_errors=True)


def test_a_script_that_cannot_be_executed_is_a_failure(tmp_path, run):
    script(tmp_path, "before_vm_start", "10_no_shebang", "echo hi\n")  # ENOEXEC
    with pytest.raises(HookError) as e:
        run("before_vm_start", "<domain/>", config=cfg(tmp_path))
    assert e.value.returncode is None and "cannot execute" in e.value.reason


# -- timeouts --------------------------------------------------------------------------


def test_a_hung_hook_is_killed_with_its_process_group_and_fails_clearly(tmp_path, run):
    pids = tmp_path / "pids"
    ran = tmp_path / "ran"
    # the hook and a background child both hang; the child holds the output pipes too
    script(tmp_path, "before_vm_start", "10_hangs", sh(f"sleep 300 & echo $$ $! > {pids}; "
                                                       "echo 'about to hang' >&2; wait"))
    script(tmp_path, "before_vm_start", "20_next", sh(f"touch {ran}"))
    t0 = time.monotonic()
    with pytest.raises(HookError) as e:
        run("before_vm_start", "<domain/>", config=cfg(tmp_path, timeout=0.5))
    assert time.monotonic() - t0 < 5
    err = e.value
    assert err.timed_out and err.script == "10_hangs" and err.returncode is None
    assert "timed out after" in err.reason and "killed" in err.reason
    assert "about to hang" in err.reason
    hook_pid, child_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while (alive(hook_pid) or alive(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(hook_pid) and not alive(child_pid)
    assert ran.exists()  # like exit code 1: the remaining scripts still run


def test_cancelling_the_async_run_kills_the_running_hook(tmp_path):
    pids = tmp_path / "pids"
    script(tmp_path, "before_vm_start", "10_hangs", sh(f"sleep 300 & echo $$ $! > {pids}; wait"))

    async def main():
        task = asyncio.create_task(run_hooks_async("before_vm_start", "<domain/>",
                                                   config=cfg(tmp_path, timeout=None)))
        while not pids.exists() or not pids.read_text().strip():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    hook_pid, child_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while (alive(hook_pid) or alive(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(hook_pid) and not alive(child_pid)


def test_async_runs_of_different_vms_proceed_concurrently(tmp_path):
    script(tmp_path, "before_vm_cont", "10", sh("sleep 0.5"))

    async def main():
        t0 = time.monotonic()
        await asyncio.gather(*(run_hooks_async("before_vm_cont", "<domain/>", config=cfg(tmp_path),
                                               vm_id=str(i)) for i in range(4)))
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.5


def test_a_signal_death_is_a_failure(tmp_path, run):
    script(tmp_path, "before_vm_start", "10", sh("kill -TERM $$"))
    with pytest.raises(HookError) as e:
        run("before_vm_start", "<domain/>", config=cfg(tmp_path))
    assert e.value.returncode == -signal.SIGTERM and "SIGTERM" in e.value.reason


def test_config_rejects_unknown_backends_and_non_positive_timeouts():
    with pytest.raises(ValueError, match="backend"):
        HookConfig(backend="xen")
    with pytest.raises(ValueError, match="timeout"):
        HookConfig(timeout=0)


def test_config_from_env_reads_the_kvmd_hooks_variables():
    c = HookConfig.from_env({"KVMD_HOOKS_DIR": "/h", "KVMD_HOOKS_TIMEOUT": "0",
                             "KVMD_HOOKS_BACKEND": "kvmd", "KVMD_HOOKS_URI": "kvmd:///system"})
    assert (c.root, c.timeout, c.backend, c.uri) == ("/h", None, "kvmd", "kvmd:///system")
