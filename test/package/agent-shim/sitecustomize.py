"""Test-only compatibility shim for Debian's WALinuxAgent 2.7.3.0 on Python 3.11.

The agent's textutil.format_exception calls
traceback.format_exception(etype=type(e), value=e, tb=tb); Python 3.10 removed the etype keyword
(the first argument is now positional-only), so every error path that formats a traceback raises
TypeError and the agent dies (agent-protocol.md section 9.3 step 2, a Debian bookworm packaging
bug). Python imports this file at start-up because test/package/agent-vm.ts puts its folder first on
the agent's PYTHONPATH; the agent's own code is not changed. Python 3.10+ still accepts the old
(type, value, tb) triple when it is passed positionally, which is what this does.
"""

import traceback

_format_exception = traceback.format_exception


def _format_exception_accepting_etype(*args, **kwargs):
    if "etype" in kwargs:
        args = (kwargs.pop("etype"),) + args
    return _format_exception(*args, **kwargs)


traceback.format_exception = _format_exception_accepting_etype
