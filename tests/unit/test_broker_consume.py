"""What the sink worker's and the consumer library's loops share (cdc.broker.consume)."""

import threading

from pydantic import BaseModel, ValidationError

from cdc.broker.consume import reconnect_delay, service_for, short_error


def test_reconnect_delay_doubles_and_is_capped():
    assert [reconnect_delay(n, 0.2, 30.0) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.6]
    assert reconnect_delay(10, 0.2, 30.0) == 30.0 and reconnect_delay(10_000, 0.2, 30.0) == 30.0


class _Many(BaseModel):
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int
    g: int


def test_short_error_is_the_same_for_both_loops():
    try:
        _Many.model_validate({})
    except ValidationError as err:
        text = short_error(err)
    assert text.startswith("a: Field required; b: Field required") and text.endswith("(+2 more)")
    try:
        _Many.model_validate("x")
    except ValidationError as err:
        assert short_error(err).startswith("<body>: ")
    assert short_error(ValueError("x" * 900)) == "x" * 500


class _Connection:
    is_open = True

    def __init__(self):
        self.calls = []

    def process_data_events(self, time_limit):
        self.calls.append(time_limit)


def test_service_for_keeps_the_connection_serviced_and_stops_on_request():
    conn, stop = _Connection(), threading.Event()
    assert service_for(conn, stop, 0.05, 0.01) and conn.calls and max(conn.calls) <= 0.01
    stop.set()
    assert not service_for(conn, stop, 5.0)
    assert service_for(None, threading.Event(), 0.01)  # no connection: a plain wait
