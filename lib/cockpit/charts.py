"""Plotly figures shared by the notebooks, the reports and the dashboard."""

from __future__ import annotations

import logging

import pandas as pd
import plotly.graph_objects as go

logger = logging.getLogger(__name__)

_LAYOUT = {
    "template": "plotly_white",
    "margin": {"l": 50, "r": 20, "t": 50, "b": 40},
    "height": 380,
    "legend": {"orientation": "h", "y": -0.15},
}


def forecast_figure(
    history: pd.DataFrame, forecast: pd.DataFrame, title: str
) -> go.Figure:
    """Draw monthly actuals and the forecast with its interval.

    `history` has columns ds, y; `forecast` has ds, yhat, yhat_lower,
    yhat_upper.
    """
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(x=history["ds"], y=history["y"], name="actual", mode="lines")
    )
    figure.add_trace(
        go.Scatter(
            x=list(forecast["ds"]) + list(forecast["ds"])[::-1],
            y=list(forecast["yhat_upper"]) + list(forecast["yhat_lower"])[::-1],
            fill="toself",
            line={"width": 0},
            name="forecast range",
            opacity=0.25,
        )
    )
    figure.add_trace(
        go.Scatter(
            x=forecast["ds"],
            y=forecast["yhat"],
            name="forecast",
            mode="lines",
            line={"dash": "dash"},
        )
    )
    figure.update_layout(title=title, yaxis_title="net revenue", **_LAYOUT)
    return figure


def backtest_figure(summary: pd.DataFrame, title: str) -> go.Figure:
    """Bar chart of WAPE per method; `summary` has columns method, wape."""
    figure = go.Figure(
        go.Bar(
            x=summary["method"],
            y=summary["wape"] * 100,
            text=[f"{v:.1%}" if pd.notna(v) else "n/a" for v in summary["wape"]],
            textposition="outside",
        )
    )
    figure.update_layout(title=title, yaxis_title="WAPE (%)", **_LAYOUT)
    return figure


def revenue_vs_target_figure(monthly: pd.DataFrame, title: str) -> go.Figure:
    """Draw monthly revenue against last year's and the target's monthly share.

    `monthly` has columns month (YYYY-MM), revenue, revenue_last_year and
    target (the period target spread evenly over its twelve months).
    """
    figure = go.Figure()
    figure.add_trace(
        go.Bar(x=monthly["month"], y=monthly["revenue"], name="revenue", opacity=0.6)
    )
    figure.add_trace(
        go.Scatter(
            x=monthly["month"],
            y=monthly["revenue_last_year"],
            name="last year",
            mode="lines+markers",
        )
    )
    if "target" in monthly and monthly["target"].notna().any():
        figure.add_trace(
            go.Scatter(
                x=monthly["month"],
                y=monthly["target"],
                name="target",
                mode="lines",
                line={"dash": "dot"},
            )
        )
    figure.update_layout(title=title, yaxis_title="net revenue per month", **_LAYOUT)
    return figure


def bar_figure(
    frame: pd.DataFrame, x: str, y: str, title: str, y_title: str
) -> go.Figure:
    """Plain bar chart of column `y` against `x`."""
    figure = go.Figure(go.Bar(x=frame[x].astype(str), y=frame[y]))
    figure.update_layout(title=title, yaxis_title=y_title, **_LAYOUT)
    return figure
