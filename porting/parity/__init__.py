"""Parity: comparing port outputs with golden tensors, reports, and the pytest plugin.

``porting.parity.compare(expected, actual, stored_windows)`` compares every stage by the
contract's rule for its tier (porting/parity/contract.py) and says
where the largest difference is (porting/parity/compare.py).
"""

from .compare import ATOL, ParityReport, StageResult, compare, compare_exact, compare_rule, compare_stage

__all__ = ["ATOL", "ParityReport", "StageResult", "compare", "compare_exact", "compare_rule", "compare_stage"]
