"""What `streamwise tail` prints for each schema."""

from __future__ import annotations

import base64

from pipelines.kafka.tail import format_record


def test_alert_line_names_entity_score_and_reasons() -> None:
    line = format_record(
        {
            "schema": "alert/1",
            "kind": "fraud_suspected",
            "entity": "customer:4",
            "score": 0.91,
            "threshold": 0.5,
            "event_id": "17",
            "event_time": "2018-04-01T00:00:00.000Z",
            "reasons": ["amount 400.00 is above the rule limit 220.00", "first payment"],
        }
    )
    assert "ALERT fraud_suspected" in line
    assert "customer:4" in line
    assert "0.910 >= 0.5" in line
    assert "amount 400.00 is above the rule limit 220.00; first payment" in line


def test_dead_letter_line_shows_reason_source_and_a_preview() -> None:
    line = format_record(
        {
            "schema": "dead-letter/1",
            "reason": "invalid_json",
            "step": "score-transactions",
            "detail": "unexpected character",
            "failed_at": "t",
            "source": {"topic": "transactions", "partition": 1, "offset": 9},
            "value_b64": base64.b64encode(b"{oops").decode(),
        }
    )
    assert "DEAD invalid_json" in line
    assert "transactions/1@9" in line
    assert "'{oops'" in line


def test_unknown_records_print_as_json() -> None:
    assert format_record({"a": 1}) == '{"a":1}'
    assert format_record([1]) == "[1]"
