"""SL learning curves: bad arguments are refused in one line before anything is written."""
import pytest

from pam_jax.workflows import sl_curve


@pytest.mark.parametrize("args, says", [
    (["--episodes", "0"], "expected positive counts"),
    (["--steps", "-5"], "expected positive counts"),
    # 1001 expert episodes would use start seeds 0..1000, and 1000 is the first tuning start
    (["--episodes", "1001"], "expert and tune sets share 1 seeds"),
])
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys, args, says):
    root = tmp_path / "root"
    assert sl_curve.main(["--task", "rope", "--root", str(root), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sl_curve: error: ") and says in err and "\n" not in err
    assert not root.exists()
