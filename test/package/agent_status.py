"""The real guest agent's view of a handler, for the package tests.

Imports WALinuxAgent (Debian's waagent 2.7.3.0, extracted, never installed) from the directory
given as --agent-root and answers with the agent's own code, one JSON object on stdout:

  manifest   the unzipped HandlerManifest.json as the agent reads it (load_manifest).
  events     what the agent's extension-telemetry collector (collect_telemetry_events.py,
             _ProcessExtensionEvents) makes of each file in <Extension.LogDir>/<name>/events:
             whether its name and size are collected at all, how many events it holds, the
             parameters of each event it would send (its own _enqueue_events_and_get_count and
             _parse_telemetry_event) and the events it drops, by its reason. The files are left
             in place (the agent deletes them after its pass).
  status     what the agent reports for <Lib.Dir>/<name>-<version>/status/<seq>.status:
             ExtHandlerInstance.collect_ext_status (read with retries, json.loads,
             parse_ext_status, the 128 KiB check), plus whether the file passed the agent's
             validation at all ("accepted"; the agent turns a rejected file into its own
             error status with code 1012 or -1, which "reported" then shows).
  reference  what the agent itself would write and run for this handler directory: the text of
             HandlerEnvironment.json (create_handler_env), of config/<seq>.settings
             (update_settings, with and without settings), the value of
             AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES, and for every operation the command
             line, working directory and agent variables that launch_command passes to
             subprocess.Popen (captured instead of run).

Only test-side shims: the status-file retry delay is set to 0 (the agent waits 2 s between its 5
reads of a broken file), and traceback.format_exception accepts the etype= keyword that 2.7.3.0
passes and Python >= 3.10 removed (agent-protocol.md section 9.3 step 2).
"""

import argparse
import importlib.util
import json
import os
import re
import sys
from collections import defaultdict

# The same shim the agent of the end-to-end tests gets (agent-shim/sitecustomize.py), loaded by
# path: importing it by name would find the system's own sitecustomize instead.
_shim = importlib.util.spec_from_file_location(
    "aad_agent_shim", os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent-shim", "sitecustomize.py")
)
_shim.loader.exec_module(importlib.util.module_from_spec(_shim))

AGENT_VARIABLES = (
    "ConfigSequenceNumber",
    "ConfigExtensionName",
    "VERSION",
)
WIRE_PROTOCOL_ADDRESS = "168.63.129.16"


def agent_modules(agent_root):
    sys.path.insert(0, agent_root)
    import azurelinuxagent.common.conf as conf
    import azurelinuxagent.ga.exthandlers as exthandlers
    from azurelinuxagent.common.cgroupconfigurator import CGroupConfigurator
    from azurelinuxagent.common.protocol.restapi import Extension, ExtensionSettings
    from azurelinuxagent.common.version import AGENT_VERSION

    return {
        "conf": conf,
        "exthandlers": exthandlers,
        "CGroupConfigurator": CGroupConfigurator,
        "Extension": Extension,
        "ExtensionSettings": ExtensionSettings,
        "AGENT_VERSION": AGENT_VERSION,
    }


class ProtocolStub(object):
    """The only protocol call the code used here makes."""

    def get_endpoint(self):
        return WIRE_PROTOCOL_ADDRESS


def handler_instance(m, args, settings=None):
    conf = m["conf"]
    conf.__conf__.values["Lib.Dir"] = args.lib_dir
    conf.__conf__.values["Extension.LogDir"] = args.log_dir
    handler = m["Extension"](name=args.name)
    handler.version = args.version
    handler.state = "enabled"
    handler.settings = [settings] if settings is not None else []
    return m["exthandlers"].ExtHandlerInstance(handler, ProtocolStub())


def extension_settings(m, seq, public=None, protected=None, thumbprint=None):
    return m["ExtensionSettings"](
        name=None,
        sequenceNumber=seq,
        publicSettings=public,
        protectedSettings=protected,
        certificateThumbprint=thumbprint,
    )


def command_status(m, args):
    exthandlers = m["exthandlers"]
    exthandlers._STATUS_FILE_RETRY_DELAY = 0
    settings = extension_settings(m, args.seq)
    instance = handler_instance(m, args, settings)
    _, status_file = instance.get_status_file_path(settings)

    accepted = True
    rejection = None
    size = None
    try:
        text, data = exthandlers.ExtHandlerInstance._read_and_parse_json_status_file(status_file)
        size = len(text)
        probe = exthandlers.ExtensionStatus(name=args.name, seq_no=args.seq)
        exthandlers.parse_ext_status(probe, data)
        if size > exthandlers._MAX_STATUS_FILE_SIZE_IN_BYTES:
            accepted = False
            rejection = "the file is {0} bytes, more than {1}".format(
                size, exthandlers._MAX_STATUS_FILE_SIZE_IN_BYTES
            )
    except Exception as error:  # the agent's own exceptions, reported as text
        accepted = False
        rejection = "{0}: {1}".format(type(error).__name__, error)

    reported = instance.collect_ext_status(settings)
    result = {
        "agentVersion": m["AGENT_VERSION"],
        "statusFile": status_file,
        "accepted": accepted,
        "rejection": rejection,
        "sizeChars": size,
        "reported": None,
    }
    if reported is not None:
        result["reported"] = {
            "status": reported.status,
            "code": reported.code,
            "message": reported.message,
            "operation": reported.operation,
            "configurationAppliedTime": reported.configurationAppliedTime,
            "sequenceNumber": reported.sequenceNumber,
            "substatus": [
                {"name": s.name, "status": s.status, "code": s.code, "message": s.message}
                for s in reported.substatusList
            ],
        }
    return result


def command_reference(m, args):
    exthandlers = m["exthandlers"]
    public = json.loads(args.public) if args.public is not None else None
    settings = extension_settings(m, args.seq, public, args.protected, args.thumbprint)
    instance = handler_instance(m, args, settings)
    base_dir = instance.get_base_dir()
    scratch = args.scratch

    # HandlerEnvironment.json, written where the test wants it instead of into the handler dir.
    environment_file = os.path.join(scratch, "HandlerEnvironment.json")
    instance.get_env_file = lambda: environment_file
    instance.create_handler_env()
    with open(environment_file) as handle:
        handler_environment = handle.read()

    written = {}
    instance.update_settings_file = lambda name, content: written.__setitem__(name, content)
    instance.update_settings(settings)
    no_settings = handler_instance(m, args, None)
    no_settings.update_settings_file = lambda name, content: written.__setitem__(
        "no-settings:" + name, content
    )
    no_settings.update_settings(None)

    # Every command, as launch_command would start it: captured instead of run.
    launched = []

    def capture(extension_name, command, cmd_name, timeout, shell, cwd, env, stdout, stderr,
                error_code=None):
        launched.append({
            "name": cmd_name,
            "command": command,
            "cwd": cwd,
            "shell": shell,
            "timeout": timeout,
            "env": dict(
                (key, value) for key, value in env.items()
                if key.startswith("AZURE_GUEST_AGENT_") or key in AGENT_VARIABLES
            ),
        })
        return ""

    configurator = m["CGroupConfigurator"].get_instance()
    configurator.start_extension_command = capture
    # The handler-state files these calls write belong in a scratch copy, not the handler dir.
    state_dir = os.path.join(scratch, "config")
    os.makedirs(state_dir, exist_ok=True)
    instance.get_conf_dir = lambda: state_dir
    instance.install(uninstall_exit_code=None, extension=settings)
    instance.enable(extension=settings, uninstall_exit_code=None)
    instance.disable(extension=settings)
    instance.uninstall(extension=settings)
    disable_codes = {}
    disable_codes[args.name] = 0
    instance.update(
        handler_version=args.version,
        disable_exit_codes=disable_codes,
        updating_from_version=args.updating_from,
        extension=settings,
    )
    after_update = defaultdict(lambda: "NOT_RUN")
    instance.update(
        handler_version=args.version,
        disable_exit_codes=after_update,
        updating_from_version=args.updating_from,
        extension=settings,
    )
    launched[-1]["name"] = "update-after-failed-update"
    instance.install(uninstall_exit_code=0, extension=settings)
    launched[-1]["name"] = "install-after-update"
    instance.enable(extension=settings, uninstall_exit_code=0)
    launched[-1]["name"] = "enable-after-update"

    return {
        "agentVersion": m["AGENT_VERSION"],
        "baseDir": base_dir,
        "handlerEnvironment": handler_environment,
        "settings": written.get("{0}.settings".format(args.seq)),
        "noSettings": written.get("no-settings:0.settings"),
        "commands": launched,
    }


def command_manifest(m, args):
    instance = handler_instance(m, args)
    manifest = instance.load_manifest()
    return {
        "agentVersion": m["AGENT_VERSION"],
        "commands": {
            "install": manifest.get_install_command(),
            "enable": manifest.get_enable_command(),
            "disable": manifest.get_disable_command(),
            "uninstall": manifest.get_uninstall_command(),
            "update": manifest.get_update_command(),
        },
        "reportHeartbeat": manifest.is_report_heartbeat(),
        "updateWithInstall": manifest.is_update_with_install(),
        "continueOnUpdateFailure": manifest.is_continue_on_update_failure(),
        "supportsMultipleExtensions": manifest.supports_multiple_extensions(),
    }


class EventQueue(object):
    """The telemetry sender the collector hands each accepted event to, keeping them instead."""

    def __init__(self):
        self.events = []

    def enqueue_event(self, event):
        self.events.append(event)

    def stopped(self):
        return False

    def get_thread_name(self):
        return "EventQueue"


# The parameters the collector fills from an extension's event (_parse_telemetry_event); the rest
# describe the machine.
EXTENSION_EVENT_PARAMETERS = (
    "EventName",
    "CapabilityUsed",
    "TaskName",
    "Context1",
    "Context2",
    "Context3",
    "EventPid",
    "EventTid",
)


def command_events(m, args):
    from azurelinuxagent.ga.collect_telemetry_events import _ProcessExtensionEvents

    m["conf"].__conf__.values["Lib.Dir"] = args.lib_dir
    m["conf"].__conf__.values["Extension.LogDir"] = args.log_dir
    folder = os.path.join(args.log_dir, args.name, "events")
    files = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        entry = {"file": name, "collected": False, "events": None, "sent": [], "dropped": {}}
        files.append(entry)
        if not re.match(_ProcessExtensionEvents._EXTENSION_EVENT_FILE_NAME_REGEX, name):
            continue
        queue = EventQueue()
        collector = _ProcessExtensionEvents(queue)
        if not collector._event_file_size_allowed(path):
            continue
        entry["collected"] = True
        with open(path, "rb") as f:
            entry["events"] = len(json.loads(f.read().decode("utf-8")))
        dropped = defaultdict(int)
        collector._enqueue_events_and_get_count(args.name, path, 0, dropped)
        entry["dropped"] = dict(dropped)
        entry["sent"] = [
            dict((p.name, p.value) for p in event.parameters if p.name in EXTENSION_EVENT_PARAMETERS)
            for event in queue.events
        ]
    return {"agentVersion": m["AGENT_VERSION"], "folder": folder, "files": files}


COMMANDS = {
    "status": command_status,
    "reference": command_reference,
    "manifest": command_manifest,
    "events": command_events,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent-root", required=True, help="the agent's dist-packages folder")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = sub.add_parser(name)
        command.add_argument("--lib-dir", required=True)
        command.add_argument("--log-dir", required=True)
        command.add_argument("--name", required=True)
        command.add_argument("--version", required=True)
        if name not in ("manifest", "events"):
            command.add_argument("--seq", type=int, required=True)
        if name == "reference":
            command.add_argument("--scratch", required=True)
            command.add_argument("--public")
            command.add_argument("--protected")
            command.add_argument("--thumbprint")
            command.add_argument("--updating-from", required=True)
    args = parser.parse_args()

    # The agent's loggers write nowhere unless given appenders; keep stdout for the answer anyway.
    answer = sys.stdout
    sys.stdout = sys.stderr
    m = agent_modules(args.agent_root)
    result = COMMANDS[args.command](m, args)
    answer.write(json.dumps(result))
    answer.write("\n")
    answer.flush()


if __name__ == "__main__":
    main()
