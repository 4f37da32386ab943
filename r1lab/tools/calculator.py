"""The shipped calculator: arithmetic on numbers, never Python. The expression is parsed into Python's AST and
only numbers, + - * / // % **, unary signs and parentheses are evaluated; a name, a call, an attribute or
anything else is refused by name. Exponents and results are bounded so a call cannot eat the machine."""

from __future__ import annotations

import ast
import math
import operator

MAX_EXPONENT = 64  # 2 ** 64 is fine; 9 ** 9 ** 9 is not computed
MAX_MAGNITUDE = 10**30  # larger results are refused: no model in r1lab needs them
MAX_LENGTH = 200  # characters of expression

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    """What is wrong with an expression, said for the model to read."""


def calculator(expression: str) -> str:
    """Evaluates an arithmetic expression, e.g. "7 * 6 + 23" -> "65".

    Args:
        expression: numbers with + - * / // % ** and parentheses.
    """
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from None
    value = _evaluate(tree.body)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError("the result is not a finite number")
        value = int(value) if value.is_integer() else round(value, 10)
    return str(value)


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is larger than {MAX_EXPONENT}")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("the result is too large") from None
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise CalculatorError("the result is too large" if not isinstance(value, complex) else "no real result")
        return value
    raise CalculatorError(f"only numbers and + - * / // % ** ( ) are allowed, not {type(node).__name__.lower()}")
