"""The shared machinery of every check: diagnosis, time limit, robustness, delegation guard."""

import threading
import time

import pytest
import torch

from lmlab.checks.core import Case, Mistake, Part, call_with_limit, close, exact, run_part


def reference(x):
    return x * 2


def wrong_plus(x):
    return x + 2


def make_part(**overrides):
    spec = dict(
        name="double",
        reference=reference,
        cases=lambda seed: [Case((torch.arange(4.0) + seed,), label="ramp"), Case((torch.ones(2, 3),), label="ones")],
        mistakes=[Mistake("plus", "you added 2 instead of multiplying by 2", wrong_plus)],
        timeout=1.0,
    )
    spec.update(overrides)
    return Part(**spec)


def test_correct_function_passes_and_prints(capsys):
    run_part(make_part(), lambda x: x + x)
    assert "correct on all 2 test inputs" in capsys.readouterr().out


def test_wrong_function_names_the_input_and_the_mistake():
    with pytest.raises(AssertionError) as info:
        run_part(make_part(), wrong_plus)
    message = str(info.value)
    assert "double is wrong on 2 of 2 test inputs" in message
    assert "First wrong input: double(tensor([0.0, 1.0, 2.0, 3.0]))" in message
    assert "Likely mistake: you added 2 instead of multiplying by 2" in message


def test_unknown_mistake_says_so():
    with pytest.raises(AssertionError, match="No catalogued mistake matches"):
        run_part(make_part(), lambda x: x * 3)


def test_mistake_matching_only_on_failing_inputs_is_called_possible():
    def half_wrong(x):
        return wrong_plus(x) if x.dim() == 1 else reference(x)

    part = make_part(mistakes=[Mistake("plus", "added 2", lambda x: wrong_plus(x) if x.dim() == 1 else x * 0)])
    with pytest.raises(AssertionError, match="Possible mistake"):
        run_part(part, half_wrong)


@pytest.mark.parametrize("bad, expected", [
    (lambda x: None, "result is None, expected a torch.Tensor of shape (4,)"),
    (lambda x: [1, 2], "result is a list, expected a torch.Tensor"),
    (lambda x: (x * 2).reshape(-1, 1), "result has shape (4, 1), expected (4,)"),
    (lambda x: "text", "result is a str"),
])
def test_wrong_return_types_are_reported_not_crashed(bad, expected):
    with pytest.raises(AssertionError) as info:
        run_part(make_part(), bad)
    assert expected in str(info.value)


def test_exceptions_name_the_type_and_the_line():
    def broken(x):
        y = x.reshape(3, 7)
        return y

    with pytest.raises(AssertionError) as info:
        run_part(make_part(), broken)
    message = str(info.value)
    assert "double raised RuntimeError" in message
    assert "y = x.reshape(3, 7)" in message


def test_not_implemented_is_a_friendly_message():
    def blank(x):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        run_part(make_part(), blank)


def test_system_exit_in_student_code_is_caught():
    def quits(x):
        raise SystemExit(3)

    with pytest.raises(AssertionError, match="SystemExit"):
        run_part(make_part(), quits)


def test_infinite_loop_is_stopped_by_the_time_limit():
    def forever(x):
        while True:
            pass

    start = time.perf_counter()
    with pytest.raises(AssertionError, match="did not return within 1 s"):
        run_part(make_part(), forever)
    assert time.perf_counter() - start < 5


def test_time_limit_survives_a_bare_except_in_student_code():
    def stubborn(x):
        while True:
            try:
                time.sleep(10)
            except Exception:
                pass

    with pytest.raises(AssertionError, match="did not return"):
        run_part(make_part(), stubborn)


def test_time_limit_outside_the_main_thread():
    box = {}

    def in_thread():
        box["outcome"] = call_with_limit(lambda: time.sleep(5), Case(), 0.5)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join(3)
    assert box["outcome"].timed_out


def test_student_mutating_inputs_does_not_spoil_the_comparison():
    def mutates(x):
        x.mul_(2)
        return x

    run_part(make_part(), mutates)


def test_non_callable_is_reported():
    with pytest.raises(AssertionError, match="expected your function double, got a int"):
        run_part(make_part(), 3)


def test_delegation_to_the_guarded_reference_is_refused():
    from lmlab import device
    from lmlab.checks import check_matmul_flops

    def delegates(m, n, k):
        return device.matmul_flops(m, n, k)

    with pytest.raises(AssertionError, match="calls lmlab.device.matmul_flops"):
        check_matmul_flops(delegates)
    assert device.matmul_flops(1, 1, 1) == 2  # restored afterwards


def test_delegation_through_a_name_imported_into_the_notebook_is_refused():
    namespace = {}
    exec("from lmlab.device import matmul_flops as mf\ndef student(m, n, k):\n    return mf(m, n, k)\n", namespace)
    from lmlab.checks import check_matmul_flops

    with pytest.raises(AssertionError, match="calls lmlab.device.matmul_flops"):
        check_matmul_flops(namespace["student"])
    from lmlab.device import matmul_flops

    assert namespace["mf"] is matmul_flops  # the student's namespace is restored


def test_library_code_may_still_use_a_guarded_reference():
    from lmlab import device
    from lmlab.checks import check_arithmetic_intensity

    def via_other_reference(m, n, k, b):
        # matmul_flops is not this part's reference; lmlab's matmul_bytes is also fine
        return device.matmul_flops(m, n, k) / device.matmul_bytes(m, n, k, b)

    check_arithmetic_intensity(via_other_reference)


def test_close_and_exact_comparators():
    assert close()(1.0, 1.0 + 1e-9) is None
    assert "expected 2" in close()(2, 3)
    assert exact()(torch.tensor([1, 2]), torch.tensor([1, 2])) is None
    assert "differs at 1 of 2 positions" in exact()(torch.tensor([1, 2]), torch.tensor([1, 3]))
    assert "NaN at index (1,)" in close()(torch.tensor([1.0, 2.0]), torch.tensor([1.0, float("nan")]))
    assert "has 1 items, expected 2" in close()((1, 2), (1,))
    assert "keys differ" in close()({"a": 1}, {"b": 1})
    assert close()({"a": (1, torch.ones(2))}, {"a": (1, torch.ones(2))}) is None


def test_results_that_print_with_braces_are_reported():
    part = make_part(reference=lambda x: {"sum": float(x.sum())},
                     mistakes=[Mistake("half", "halved", lambda x: {"sum": float(x.sum()) / 2})],
                     compare=close())
    with pytest.raises(AssertionError, match=r"(?s)result\['sum'\] is .*Likely mistake: halved"):
        run_part(part, lambda x: {"sum": float(x.sum()) / 2})


def test_small_tensors_are_printed_with_the_differences_marked():
    part = make_part(reference=lambda x: torch.ones(3, 4, dtype=torch.bool).tril(),
                     cases=lambda seed: [Case((0,), label="one")], mistakes=[], compare=exact())
    with pytest.raises(AssertionError) as info:
        run_part(part, lambda x: torch.ones(3, 4, dtype=torch.bool).tril(1))
    message = str(info.value)
    assert "got (* marks the 3 differing values):" in message
    assert " T T* F F" in message.replace("  ", " ")


def test_a_failure_renders_in_ipython_without_lmlab_frames():
    from lmlab.checks.core import CheckFailed

    with pytest.raises(CheckFailed) as info:
        run_part(make_part(), wrong_plus)
    lines = info.value._render_traceback_()
    assert len(lines) == 1 and "Likely mistake" in lines[0] and "core.py" not in lines[0]


def test_a_mistake_is_named_despite_nan_to_num_and_a_large_negative_fill():
    from lmlab.checks import check_attention

    def attention(q, k, v, mask=None):  # softmax over the queries, -1e9, NaN turned into 0
        s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
        if mask is not None:
            s = s.masked_fill(~mask, -1e9)
        return torch.softmax(s, dim=-2).nan_to_num(0.0) @ v

    with pytest.raises(AssertionError, match="(Likely|Possible) mistake.*: you took the softmax over the queries"):
        check_attention(attention)


def test_an_error_after_wrong_values_still_names_the_mistake():
    from lmlab.checks import check_attention

    def attention(q, k, v, mask=None):  # no transpose: runs only while T_k == d
        s = q @ k / q.shape[-1] ** 0.5
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        return torch.softmax(s, dim=-1) @ v

    with pytest.raises(AssertionError) as info:
        check_attention(attention)
    message = str(info.value)
    assert "without transposing k" in message and "On the next input it stopped" in message


def test_the_in_process_fallback_grades_the_same(monkeypatch):
    monkeypatch.setenv("LMLAB_CHECK_IN_PROCESS", "1")
    run_part(make_part(), lambda x: x + x, quiet=True)
    with pytest.raises(AssertionError, match="Likely mistake: you added 2"):
        run_part(make_part(), wrong_plus)
