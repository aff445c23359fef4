"""Hooks on the kvmd backend: a VM spec seen by hook scripts as libvirt domain XML.

kvmd runs VMs from its own spec, but hook scripts edit libvirt domain XML. For a
domain-XML hook point on the kvmd backend the endpoint calls `run_domxml_hooks_on_spec`:

1. no script installed for the point: the spec is returned as it is (no conversion);
2. the spec becomes domain XML (`compat.domxml.spec_to_xml`) and the point's scripts run
   over it (`hooks.runner`, backend "kvmd": `import libvirt` in a script is the shim);
3. no script changed the XML: the original spec is returned (no lossy round trip);
4. otherwise the final XML becomes the spec kvmd will run (`compat.domxml.xml_to_spec`).
   An edit the converter cannot express (`compat.errors.UnsupportedXML`, or XML it cannot
   parse) raises `HookConversionError`, a `HookError` naming the scripts that edited the
   XML and the converter's own message (which names the element/attribute). At points
   whose failures VDSM ignores it is logged and the original spec is kept.

On the libvirt backend there is nothing to convert: the endpoint runs
`hooks.runner.run_hooks` over the XML it gives libvirt.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from hooks import points as _points
from hooks.runner import (
    HookConfig,
    HookError,
    HookResult,
    find_scripts,
    resolve_point,
    run_hooks,
    run_hooks_async,
)

log = logging.getLogger("hooks")


class HookConversionError(HookError):
    """Hooks left domain XML that kvmd cannot run; `cause` is the converter's error."""

    def __init__(self, point: str, writers: list[str], cause: Exception, result: HookResult):
        self.cause = cause
        self.writers = writers
        who = ", ".join(writers) or "the hooks"
        reason = f"the domain XML written by {who} cannot be run by kvmd: {cause}"
        super().__init__(point, writers[-1] if writers else None, 0, "", reason=reason,
                         results=result.scripts, data=result.data)


def _converters() -> tuple[Any, Any]:
    from compat import domxml  # noqa: PLC0415 - only the kvmd backend needs compat

    return domxml.spec_to_xml, domxml.xml_to_spec


def _kvmd_config(config: HookConfig | None) -> HookConfig:
    config = config or HookConfig(backend="kvmd")
    return config if config.backend == "kvmd" else dataclasses.replace(config, backend="kvmd")


def _check_point(point: str | _points.HookPoint) -> _points.HookPoint:
    hp = resolve_point(point)
    if hp.payload != _points.DOMAIN:
        raise ValueError(f"hook point {hp.name} carries {hp.payload}, not the domain XML")
    return hp


def _to_spec(hp: _points.HookPoint, spec_doc: dict, xml: str, result: HookResult,
             raise_errors: bool | None) -> dict:
    if not result.changed or result.data == xml:
        return spec_doc
    _, xml_to_spec = _converters()
    try:
        return xml_to_spec(result.data)
    except Exception as e:  # the converter's verdict on what the hooks wrote
        writers = [s.script for s in result.scripts if s.changed]
        err = HookConversionError(hp.name, writers, e, result)
        fails = hp.fails_operation if raise_errors is None else raise_errors
        if fails:
            raise err from e
        log.warning("%s; ignored at %s, the VM keeps its spec", err, hp.name)
        return spec_doc


def run_domxml_hooks_on_spec(point: str | _points.HookPoint, spec_doc: dict, *,
                             config: HookConfig | None = None, vm_id: str | None = None,
                             custom: Mapping[str, Any] | None = None,
                             params: Mapping[str, Any] | None = None,
                             raise_errors: bool | None = None,
                             on_result: Callable[[HookResult], None] | None = None) -> dict:
    """Run domain-XML hook point `point` over kvmd spec `spec_doc`; the spec to use next.

    Raises HookError when a script fails (at points that fail the operation) and
    HookConversionError when the hooks' XML cannot become a kvmd spec. `on_result`, if
    given, sees the runner's HookResult (each script's exit status, stderr) on success.
    """
    hp = _check_point(point)
    config = _kvmd_config(config)
    if not find_scripts(config.root, hp.name):
        return spec_doc
    spec_to_xml, _ = _converters()
    xml = spec_to_xml(spec_doc)
    result = run_hooks(hp, xml, config=config, vm_id=vm_id, custom=custom, params=params,
                       raise_errors=raise_errors)
    if on_result:
        on_result(result)
    return _to_spec(hp, spec_doc, xml, result, raise_errors)


async def run_domxml_hooks_on_spec_async(point: str | _points.HookPoint, spec_doc: dict, *,
                                         config: HookConfig | None = None,
                                         vm_id: str | None = None,
                                         custom: Mapping[str, Any] | None = None,
                                         params: Mapping[str, Any] | None = None,
                                         raise_errors: bool | None = None,
                                         on_result: Callable[[HookResult], None] | None = None,
                                         ) -> dict:
    """`run_domxml_hooks_on_spec` for asyncio (the conversions are pure and quick)."""
    hp = _check_point(point)
    config = _kvmd_config(config)
    if not find_scripts(config.root, hp.name):
        return spec_doc
    spec_to_xml, _ = _converters()
    xml = spec_to_xml(spec_doc)
    result = await run_hooks_async(hp, xml, config=config, vm_id=vm_id, custom=custom,
                                   params=params, raise_errors=raise_errors)
    if on_result:
        on_result(result)
    return _to_spec(hp, spec_doc, xml, result, raise_errors)
