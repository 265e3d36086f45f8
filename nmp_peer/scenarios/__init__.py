"""Pre-concert checks: two peers with a hostile network between them, and what the audience hears.

``spec`` (named scenarios from the shipped ``conf/scenarios.toml``, the clips), ``jam`` (one jam
through the relay on the loopback, netns or docker backend), ``truth`` (counters against
the relay's ground truth), ``alignment`` (where each played block came from in the clip),
``clicks``, ``analysis`` (quality), ``runner`` (every scenario × concealer), ``report``
(report.md and plots), ``backends`` (where the parties run: loopback, netns, docker).
``nmp-peer scenarios run`` is the command.
"""

from nmp_peer.scenarios.spec import Scenario, ScenarioError, load_scenarios, select

__all__ = ["Scenario", "ScenarioError", "load_scenarios", "select"]
