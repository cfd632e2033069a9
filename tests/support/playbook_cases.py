"""Playbooks with one field wrong or missing, and the JSON path each problem must name (issue 9, point 2).

Shared by the engine's validation tests and the tests of ``POST /validate``, ``POST /cluster/jobs`` and
``secauto validate``, so all of them are held to the same paths. Each case: (playbook, path, a fragment
of the message).
"""

from __future__ import annotations

from typing import Any

Case = tuple[Any, str, str]

# A required field that is absent: the path names the field, not the step that lacks it.
MISSING_FIELDS: list[Case] = [
    ([{}], "$[0].action", "needs 'action'"),
    ({"name": "x"}, "$.steps", "needs 'steps'"),
    ([{"action": "log", "message": "ok"}, {"action": "run_script"}], "$[1].script", "needs 'script'"),
    ([{"action": "set"}], "$[0].variables", "needs 'variables'"),
    ([{"action": "log"}], "$[0].message", "needs 'message'"),
    ([{"action": "sleep"}], "$[0].seconds", "needs 'seconds'"),
    ([{"action": "play"}], "$[0].playbook", "needs 'playbook'"),
    ([{"action": "var"}], "$[0].path", "needs 'path'"),
    ([{"action": "http_request"}], "$[0].url", "needs 'url'"),
    ([{"action": "if", "then": []}], "$[0].condition", "needs 'condition'"),
    ([{"action": "if", "condition": True}], "$[0].then", "needs 'then'"),
    ([{"action": "foreach", "steps": []}], "$[0].items", "needs 'items'"),
    ([{"action": "foreach", "items": [1]}], "$[0].steps", "needs 'steps'"),
    ([{"action": "log", "message": "a"}, {"action": "log", "message": "b"},
      {"action": "if", "condition": True, "then": [{"action": "log"}]}], "$[2].then[0].message", "needs 'message'"),
    ([{"action": "if", "condition": True, "then": [],
       "else": [{"action": "log", "message": "x"}, {"action": "sleep"}]}], "$[0].else[1].seconds", "needs 'seconds'"),
    ([{"action": "foreach", "items": [1], "steps": [{"action": "set"}]}], "$[0].steps[0].variables",
     "needs 'variables'"),
    ({"steps": [{"action": "sleep"}]}, "$.steps[0].seconds", "needs 'seconds'"),
    ([{"if": {"true": []}}], "$[0].if.conditions", "needs 'conditions'"),
    ([{"if": {}}], "$[0].if.condition", "needs 'conditions' (classic) or 'condition'"),
    ([{"if": {"then": []}}], "$[0].if.condition", "needs 'conditions' (classic) or 'condition'"),
    ([{"if": {"conditions": [], "true": [{"action": "log"}]}}], "$[0].if.true[0].message", "needs 'message'"),
    ([{"if": [True, {"action": "play"}]}], "$[0].if[1].playbook", "needs 'playbook'"),
    ([{"action": "set", "variables": {}, "when": ["==", 1]}], "$[0].when[2]", "needs [op, left, right]"),
    ([{"action": "set", "variables": {}, "when": {"eq": [1]}}], "$[0].when.eq[1]", "two operands"),
    ([{"if": {"conditions": [["<", 1]], "true": None}}], "$[0].if.conditions[0][2]", "needs [op, left, right]"),
]  # fmt: skip

# A field that is there but wrong: the path names that field (or the part of it that is wrong).
WRONG_FIELDS: list[Case] = [
    # documents and step shapes
    ({"action": "run_script"}, "$.action", "unknown key 'action'"),
    ({"steps": [], "name": 5}, "$.name", "must be a string"),
    ({"steps": "x"}, "$.steps", "a playbook is a list of steps"),
    ([1], "$[0]", "must be an object"),
    ([{"action": 5}], "$[0].action", "must be a string"),
    ([{"action": "explode"}], "$[0].action", "unknown action 'explode'"),
    ([{"play": "a", "if": {}}], "$[0].if", "ambiguous"),
    ([{"plugin": "x"}], "$[0].plugin", "not supported"),
    ([{"action": "set", "variables": {"a": 1}, 1: 2}], '$[0]["1"]', "keys must be strings"),
    # every action's typed fields
    ([{"action": "run_script", "script": 5}], "$[0].script", "Expected `str`"),
    ([{"action": "run_script", "script": "../x"}], "$[0].script", "bad script name"),
    ([{"action": "run_script", "script": "x", "parameters": []}], "$[0].parameters", "Expected `object`"),
    ([{"action": "run_script", "script": "x", "parameters": {"target": "{{}}"}}], "$[0].parameters.target",
     "empty variable path"),
    ([{"action": "run_script", "script": "x", "parameters": {"t": "{{a b}}"}}], "$[0].parameters.t", "bad variable"),
    ([{"action": "run_script", "script": "x", "bogus": 1}], "$[0].bogus", "unknown field 'bogus'"),
    ([{"action": "set", "variables": "x"}], "$[0].variables", "Expected `object`"),
    ([{"action": "log", "message": "x", "level": "loud"}], "$[0].level", "(allowed: trace, debug, info"),
    ([{"action": "log", "message": "{{}}"}], "$[0].message", "empty variable path"),
    ([{"action": "sleep", "seconds": "soon"}], "$[0].seconds", "Expected `float`"),
    ([{"action": "sleep", "seconds": -1}], "$[0].seconds", ">= 0"),
    ([{"action": "fail", "reason": "x"}], "$[0].reason", "unknown field 'reason'"),
    ([{"action": "play", "playbook": 5}], "$[0].playbook", "Expected `str`"),
    ([{"action": "play", "playbook": "../etc/passwd"}], "$[0].playbook", "bad playbook name"),
    ([{"action": "var", "path": ""}], "$[0].path", "empty variable path"),
    ([{"action": "var", "path": 7}], "$[0].path", "Expected `str`"),
    ([{"action": "http_request", "url": "ftp://x"}], "$[0].url", "not an http(s) URL"),
    ([{"action": "http_request", "url": "http://x", "method": "BREW"}], "$[0].method", "(allowed: GET, POST"),
    ([{"action": "http_request", "url": "http://x", "headers": {"token": 1}}], "$[0].headers.token",
     "Expected `str`"),
    ([{"action": "http_request", "url": "http://x", "headers": {"Accept": "a", "X-Key": 1}}],
     '$[0].headers["X-Key"]', "Expected `str`"),
    ([{"action": "http_request", "url": "http://x", "expect_status": ["200"]}], "$[0].expect_status[0]",
     "Expected `int`"),
    ([{"action": "http_request", "url": "http://x", "body": 5}], "$[0].body", "Expected `str | null`"),
    ([{"action": "if", "condition": True, "then": {}}], "$[0].then", "must be a list of steps"),
    ([{"action": "if", "condition": True, "then": [{"action": "x"}]}], "$[0].then[0].action", "unknown action"),
    ([{"action": "foreach", "items": "x", "steps": []}], "$[0].items", "Expected `array`"),
    ([{"action": "foreach", "items": [1], "steps": [], "concurrency": 0}], "$[0].concurrency", ">= 1"),
    ([{"action": "foreach", "items": [1], "steps": [], "as": "a.b"}], "$[0].as", "plain variable name"),
    # the step options, on every form
    ([{"action": "set", "variables": {}, "retry": {"attempts": 0}}], "$[0].retry.attempts", ">= 1"),
    ([{"action": "set", "variables": {}, "retry": {"delay": "x"}}], "$[0].retry.delay", "Expected `float`"),
    ([{"action": "set", "variables": {}, "retry": {"backoff": 0.5}}], "$[0].retry.backoff", ">= 1"),
    ([{"action": "set", "variables": {}, "retry": {"tries": 2}}], "$[0].retry.tries", "unknown field `tries`"),
    ([{"action": "set", "variables": {}, "retry": 3}], "$[0].retry", "Expected `object`"),
    ([{"action": "set", "variables": {}, "on_error": "ignore"}], "$[0].on_error",
     "Invalid enum value 'ignore' (allowed: fail, continue)"),
    ([{"action": "set", "variables": {}, "timeout": -1}], "$[0].timeout", "> 0"),
    ([{"action": "set", "variables": {}, "timeout": "1m"}], "$[0].timeout", "Expected `float | null`"),
    ([{"action": "set", "variables": {}, "output": ""}], "$[0].output", "length >= 1"),
    ([{"action": "log", "message": "x", "name": ""}], "$[0].name", "length >= 1"),
    ([{"action": "set", "variables": {}, "strict_templates": "yes"}], "$[0].strict_templates", "Expected `bool`"),
    ([{"action": "set", "variables": {}, "when": {"eqq": [1, 1]}}], "$[0].when.eqq", "not a condition"),
    ([{"action": "set", "variables": {}, "when": ["=~", 1, 1]}], "$[0].when[0]", "unknown operator"),
    ([{"action": "set", "variables": {}, "when": {"var": ""}}], "$[0].when.var", "empty variable path"),
    ([{"action": "set", "variables": {}, "when": {"var": "a", "value": 1}}], "$[0].when.value", "only 'default'"),
    ([{"action": "set", "variables": {}, "when": ["matches", "x", "(a)\\1"]}], "$[0].when[2]", "backreferences"),
    ([{"run": "x", "retry": {"attempts": "3"}}], "$[0].retry.attempts", "Expected `int`"),
    ([{"if": {"condition": True, "then": []}, "on_error": "skip"}], "$[0].on_error", "allowed: fail, continue"),
    # the classic forms
    ([{"run": 5}], "$[0].run", "Expected `str`"),
    ([{"run": "../x"}], "$[0].run", "bad script name"),
    ([{"run": "x", "target": "{{}}"}], "$[0].target", "empty variable path"),
    ([{"play": 5}], "$[0].play", "Expected `str`"),
    ([{"play": "a", "extra": 1}], "$[0].extra", "unknown key 'extra'"),
    ([{"var": 3}], "$[0].var", "Expected `str`"),
    ([{"var": "a", "default": 1, "fallback": 2}], "$[0].fallback", "unknown key 'fallback'"),
    ([{"if": 5}], "$[0].if", "'if' takes an object"),
    ([{"if": {"conditions": [], "logic": "xor", "true": None}}], "$[0].if.logic", "'and' or 'or'"),
    ([{"if": {"conditions": "x", "true": None}}], "$[0].if.conditions", "must be a list of conditions"),
    ([{"if": {"conditions": [], "true": [{"run": "../x"}]}}], "$[0].if.true[0].run", "bad script name"),
    ([{"if": {"condition": True, "then": {"run": 5}}}], "$[0].if.then.run", "Expected `str`"),
    ([{"if": {"when": True}}], "$[0].if.when", "unknown key"),
    ([{"if": [True]}], "$[0].if", "legacy form"),
    ([{"if": [["==", 1, 1, 1], []]}], "$[0].if[0][3]", "needs [op, left, right]"),
]  # fmt: skip

ALL_CASES: list[Case] = MISSING_FIELDS + WRONG_FIELDS


def case_ids(cases: list[Case]) -> list[str]:
    """Test ids: the expected paths (pytest numbers the duplicates)."""
    return [path for _, path, _ in cases]
