"""Named exceptions of the cockpit.

Every message names the bad value and says what to do next, so a hub analyst
can fix the input without reading the code.
"""


class CockpitError(Exception):
    """Base class of every error the cockpit raises on purpose."""


class MartError(CockpitError):
    """The mart file is missing, locked or lacks a table it should have."""


class IngestError(CockpitError):
    """An export cannot be loaded as a whole (missing file or columns)."""


class ParameterError(CockpitError):
    """A run parameter file has a missing key or a value of the wrong type."""


class KpiError(CockpitError):
    """A KPI name, grain or period was requested that the registry lacks."""


class ForecastError(CockpitError):
    """A forecast cannot be made for a series, even with the fallback method."""


class TargetError(CockpitError):
    """A target allocation or adjustment is inconsistent."""


class BatchError(CockpitError):
    """The notebook batch cannot start (no notebooks, no regions, bad folder)."""


class ScopeError(CockpitError):
    """A viewer asked for data outside the scope they are allowed to see."""


class ServeError(CockpitError):
    """The dashboard server cannot start (notebook missing, port in use)."""


class ReportError(CockpitError):
    """An executed notebook cannot be turned into an HTML report."""


class HuddleError(CockpitError):
    """A huddle pack or survey answer names an unknown team, an invalid week
    or an invalid survey value."""


class IncentiveError(CockpitError):
    """A bonus cannot be computed: unknown plan or seller, or no data for it."""


class PotentialError(CockpitError):
    """Account potential cannot be estimated: invalid settings or missing data."""


class NotifyError(CockpitError):
    """A notification cannot be sent: refused host, server error or bad address."""
