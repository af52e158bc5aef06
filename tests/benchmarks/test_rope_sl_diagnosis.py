"""benchmarks/rope_sl_diagnosis.py: the locality measure against closed forms."""
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))

import rope_sl_diagnosis as diag  # noqa: E402  (benchmarks/rope_sl_diagnosis.py)

LENGTH = 2 * np.pi * 0.1          # a circle of radius 0.1 m
CENTRE = np.array([0.05, -0.02])


def _ring(n=64):
    ang = 2 * np.pi * np.arange(n) / n
    return CENTRE + 0.1 * np.stack([np.cos(ang), np.sin(ang)], 1)


def _point(radius, deg):
    t = np.deg2rad(deg)
    return np.r_[CENTRE + radius * np.array([np.cos(t), np.sin(t)]), 0.01]


def test_a_radial_move_onto_the_circle_is_zero_and_its_length_is_the_travel():
    radial, travel = diag.radial_offset(_ring(), LENGTH, np.stack([_point(0.06, 30), _point(0.1, 30)]))
    assert radial == pytest.approx(0.0, abs=1e-9) and travel == pytest.approx(4.0)


@pytest.mark.parametrize("deg", [10.0, 90.0, 180.0])
def test_a_place_elsewhere_on_the_circle_is_the_chord(deg):
    radial, travel = diag.radial_offset(_ring(), LENGTH, np.stack([_point(0.1, 0), _point(0.1, deg)]))
    chord = 100 * 2 * 0.1 * np.sin(np.deg2rad(deg) / 2)
    assert radial == pytest.approx(chord) and travel == pytest.approx(chord)
