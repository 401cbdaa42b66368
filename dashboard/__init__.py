"""The ops dashboard: a web page fed by the event stream (MQTT, or a bus in the same process).

:class:`DashboardServer` serves it for a source (:class:`MqttSource` or :class:`BusSource`);
:class:`DashboardState` is the pure aggregation behind it.
"""

from __future__ import annotations

from dashboard.server import DashboardServer
from dashboard.sources import BusSource, MqttEndpoint, MqttSource
from dashboard.state import DashboardState

__all__ = ["BusSource", "DashboardServer", "DashboardState", "MqttEndpoint", "MqttSource"]
