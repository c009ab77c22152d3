"""netlab: namespaces + a TUN link emulator, to run dupsession over impaired multi-path networks.

Why: the test kernel has no netem, so impairment happens in a userspace emulator inside a
"wan" router namespace that every uplink, relay and server link attaches to. See README.md.
"""

from contrib.netlab.lab import Lab, LabError, control_request
from contrib.netlab.scenario import Link, Scenario, ScenarioError, load_scenario

__all__ = [
    "Lab",
    "LabError",
    "Link",
    "Scenario",
    "ScenarioError",
    "control_request",
    "load_scenario",
]
