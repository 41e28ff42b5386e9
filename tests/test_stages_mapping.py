"""The linear map and the matching between two models' features (issue 12), by hand."""

import numpy as np
import pytest

from falcon_core.stages import mapping as M


def test_ridge_by_hand_one_feature():
    # x centred: -1, 0, 1; y centred: -2, 0, 2: w = Σxy / (Σx² + λ) = 4 / (2 + λ)
    X = np.array([[1.0], [2.0], [3.0]])
    Y = np.array([[2.0], [4.0], [6.0]])
    W, b = M.ridge(X, Y, lam=2.0)
    assert W[0, 0] == pytest.approx(1.0)  # 4 / (2 + 2)
    assert b[0] == pytest.approx(2.0)  # ȳ − x̄ w = 4 − 2 · 1
    W, b = M.ridge(X, Y, lam=0.0)
    assert (W[0, 0], b[0]) == (pytest.approx(2.0), pytest.approx(0.0))


def test_ridge_recovers_an_exact_map_without_penalty():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    W0 = np.array([[1.0, 0.0], [2.0, -1.0], [0.0, 0.5]])
    Y = X @ W0 + np.array([3.0, -2.0])
    W, b = M.ridge(X, Y, 0.0)
    assert W == pytest.approx(W0, abs=1e-9)
    assert b == pytest.approx([3.0, -2.0], abs=1e-9)


def test_r2_by_hand():
    # residuals 0, 0, 1 -> 1; total (1-2)² + 0 + (3-2)² = 2 -> 1 - 1/2
    overall, per = M.r2(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert overall == pytest.approx(0.5) and per[0] == pytest.approx(0.5)
    # two columns: residuals 1 and 0, totals 2 and 8 -> overall 1 - 1/10, per column 0.5 and 1
    Y = np.array([[1.0, 0.0], [2.0, 2.0], [3.0, 4.0]])
    P = np.array([[1.0, 0.0], [2.0, 2.0], [4.0, 4.0]])
    overall, per = M.r2(Y, P)
    assert overall == pytest.approx(0.9) and per == pytest.approx([0.5, 1.0])


def test_split_is_a_fixed_partition():
    fit, choice, test = M.split(10, seed=0)
    assert (len(fit), len(choice), len(test)) == (6, 2, 2)
    assert sorted(np.concatenate([fit, choice, test]).tolist()) == list(range(10))
    assert M.split(10, seed=0)[2].tolist() == test.tolist()


def test_fit_map_chooses_lambda_on_held_out_images_and_reports_test_r2():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 5))
    Y = X[:, :2] * [2.0, -1.0] + 0.1 * rng.normal(size=(400, 2))  # Y reads two features of X
    m = M.fit_map(X, Y)
    assert (m.n_fit, m.n_choice, m.n_test) == (240, 80, 80)
    assert m.r2_test > 0.98 and m.r2_test_per_feature.min() > 0.98
    assert m.lam_relative in M.LAMBDA_GRID and m.lam_relative < 1.0  # clean data: little penalty
    assert set(m.r2_choice) == set(M.LAMBDA_GRID)
    # noise: nothing to predict, the held-out R² says so
    m = M.fit_map(X, rng.normal(size=(400, 2)))
    assert m.r2_test < 0.05
    with pytest.raises(ValueError):
        M.fit_map(X[:5], Y[:5])


def test_correlation_by_hand():
    A = np.array([[1.0], [2.0], [3.0]])
    B = np.array([[2.0, 3.0, 1.0], [4.0, 2.0, 1.0], [6.0, 1.0, 1.0]])
    assert M.correlation(A, B)[0] == pytest.approx([1.0, -1.0, 0.0])
    # x = 1,2,3 and y = 1,3,2: centred -1,0,1 and -1,1,0: Σ 1 / sqrt(2 · 2) = 0.5
    assert M.correlation(A, np.array([[1.0], [3.0], [2.0]]))[0, 0] == pytest.approx(0.5)


def test_map_weights_are_standardised_coefficients():
    X = np.array([[0.0, 0.0], [2.0, 8.0], [0.0, 8.0], [2.0, 0.0]])  # stds 1 and 4
    Y = np.array([[0.0], [4.0], [0.0], [4.0]])  # std 2
    m = M.RidgeMap(W=np.array([[2.0], [0.25]]), b=np.zeros(1), lam=0.0, lam_relative=0.0,
                   r2_choice={}, r2_test=1.0, r2_test_per_feature=np.ones(1), n_fit=4,
                   n_choice=0, n_test=0)
    # |2| · 1 / 2 = 1 and |0.25| · 4 / 2 = 0.5
    assert M.map_weights(m, X, Y)[0] == pytest.approx([1.0, 0.5])


def test_top_matches():
    S = np.array([[0.1, 0.9, 0.5], [0.3, 0.3, 0.2]])
    assert M.top_matches(S, 2).tolist() == [[1, 2], [0, 1]]  # tie: the lower column first
    assert M.top_matches(S, 5).shape == (2, 3)


def test_lambda_is_the_best_on_the_choice_split_and_it_matters_when_data_are_few():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 40))  # 36 fitting images for 40 features: least squares overfits
    Y = X[:, :1] + 2.0 * rng.normal(size=(60, 1))
    m = M.fit_map(X, Y)
    assert m.r2_choice[m.lam_relative] == max(m.r2_choice.values())
    assert m.lam_relative >= 1.0  # a strong penalty wins here
    assert m.r2_choice[1e-4] < m.r2_choice[m.lam_relative]
