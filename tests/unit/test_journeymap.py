"""Journey maps: the built-in maps, `next_stage` semantics and error reports for bad files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from models.errors import JourneyMapError
from models.events import CANONICAL_TYPES
from models.fold import _MEASURES
from models.journeymap import METRICS, JourneyMap, load_journey_map, parse_journey_map

RETAIL_STAGES = (
    "awareness",
    "consideration",
    "comparison",
    "decision",
    "purchase",
    "loyalty",
    "advocacy",
)
B2B_STAGES = (
    "research",
    "site_visit",
    "call_booked",
    "sales_call",
    "follow_up",
    "purchase",
    "feedback",
)


def measures(**values: float) -> Callable[[str], float]:
    """A `measure` callback: the given metrics, every other documented metric is 0."""

    def measure(name: str) -> float:
        assert name in METRICS
        return values.get(name, 0)

    return measure


NONE = measures()

# A small valid map; line numbers below refer to this text.
SHOP = """\
name: shop
stages:
  - browse
  - cart
  - bought
rules:
  - to: bought
    events: [purchase]
  - to: cart
    events: [add_to_cart, page_view]
    where: {cart_items: {gte: 1}}
"""


def map_error(text: str) -> str:
    with pytest.raises(JourneyMapError) as info:
        parse_journey_map(text, "shop.yaml")
    return str(info.value)


# --- built-in maps ------------------------------------------------------------------------


def test_load_journey_map_retail_has_ordered_stages(retail_map: JourneyMap) -> None:
    assert retail_map.name == "retail"
    assert retail_map.stages == RETAIL_STAGES
    assert retail_map.initial_stage == "awareness"
    assert retail_map.event_types == frozenset(CANONICAL_TYPES)
    assert retail_map.session_timeout_ms == 30 * 60_000


def test_load_journey_map_b2b_has_ordered_stages_and_custom_types(b2b_map: JourneyMap) -> None:
    assert b2b_map.name == "b2b"
    assert b2b_map.stages == B2B_STAGES
    assert b2b_map.initial_stage == "research"
    assert b2b_map.event_types == frozenset(CANONICAL_TYPES) | {
        "demo_request",
        "call_booked",
        "call_completed",
        "proposal_sent",
        "nps_response",
    }
    assert b2b_map.session_timeout_ms == 60 * 60_000


def test_load_journey_map_path_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(SHOP, "utf-8")

    journey_map = load_journey_map(path)

    assert journey_map.name == "shop"
    assert journey_map.stages == ("browse", "cart", "bought")
    assert journey_map.session_timeout_ms == 30 * 60_000


def test_load_journey_map_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "map.yaml"

    with pytest.raises(JourneyMapError, match="cannot read journey map") as info:
        load_journey_map(path)

    assert str(path) in str(info.value)


# --- next_stage ---------------------------------------------------------------------------


def test_next_stage_first_matching_rule_in_file_order_wins() -> None:
    head = "name: m\nstages: [a, b, c]\nrules:\n"
    to_b = "  - {to: b, events: [search]}\n"
    to_c = "  - {to: c, events: [search]}\n"

    b_first = parse_journey_map(head + to_b + to_c, "m.yaml")
    c_first = parse_journey_map(head + to_c + to_b, "m.yaml")

    assert b_first.next_stage("a", "search", "web", NONE) == "b"
    assert c_first.next_stage("a", "search", "web", NONE) == "c"


def test_next_stage_retail_purchase_second_order_prefers_loyalty(retail_map: JourneyMap) -> None:
    assert retail_map.next_stage("decision", "purchase", "web", measures(purchases=1)) == "purchase"
    assert retail_map.next_stage("decision", "purchase", "web", measures(purchases=2)) == "loyalty"


def test_next_stage_rule_without_from_only_moves_forward(retail_map: JourneyMap) -> None:
    assert retail_map.next_stage("awareness", "product_view", "web", NONE) == "consideration"
    assert retail_map.next_stage("decision", "product_view", "web", NONE) is None
    assert retail_map.next_stage("loyalty", "add_to_cart", "web", NONE) is None
    assert retail_map.next_stage("loyalty", "purchase", "web", measures(purchases=1)) is None


def test_next_stage_rule_to_current_stage_stays(retail_map: JourneyMap) -> None:
    assert retail_map.next_stage("decision", "add_to_cart", "web", NONE) is None


def test_next_stage_unknown_current_stage_allows_forward_rules(retail_map: JourneyMap) -> None:
    assert retail_map.next_stage("retired", "search", "web", NONE) == "consideration"


def test_next_stage_from_allows_moving_back(retail_map: JourneyMap) -> None:
    emptied = measures(cart_items=0)

    assert retail_map.next_stage("decision", "remove_from_cart", "web", emptied) == "comparison"


def test_next_stage_from_applies_only_in_listed_stages(retail_map: JourneyMap) -> None:
    emptied = measures(cart_items=0)

    assert retail_map.next_stage("purchase", "remove_from_cart", "web", emptied) is None
    assert retail_map.next_stage("consideration", "remove_from_cart", "web", emptied) is None


def test_next_stage_from_rule_still_checks_where(retail_map: JourneyMap) -> None:
    still_full = measures(cart_items=1)

    assert retail_map.next_stage("decision", "remove_from_cart", "web", still_full) is None


def test_next_stage_b2b_from_rule_before_forward_rule(b2b_map: JourneyMap) -> None:
    assert b2b_map.next_stage("sales_call", "call_completed", "call", NONE) == "follow_up"
    assert b2b_map.next_stage("call_booked", "call_completed", "call", NONE) == "sales_call"


@pytest.mark.parametrize("channel", ["web", "app"])
def test_next_stage_channels_filter_matches(b2b_map: JourneyMap, channel: str) -> None:
    assert b2b_map.next_stage("research", "page_view", channel, NONE) == "site_visit"


@pytest.mark.parametrize("channel", ["email", "ads", "store", "call"])
def test_next_stage_channels_filter_excludes(b2b_map: JourneyMap, channel: str) -> None:
    assert b2b_map.next_stage("research", "page_view", channel, NONE) is None


def test_next_stage_where_condition_must_hold(retail_map: JourneyMap) -> None:
    assert retail_map.next_stage("purchase", "review_written", "web", NONE) is None
    assert (
        retail_map.next_stage("purchase", "review_written", "web", measures(purchases=1))
        == "advocacy"
    )


def test_next_stage_where_threshold_is_inclusive_for_gte(retail_map: JourneyMap) -> None:
    two = measures(category_views=2)
    three = measures(category_views=3)

    assert retail_map.next_stage("consideration", "product_view", "web", two) is None
    assert retail_map.next_stage("consideration", "product_view", "web", three) == "comparison"


def test_next_stage_where_all_conditions_must_hold() -> None:
    text = (
        "name: m\nstages: [a, b]\nrules:\n"
        "  - to: b\n    events: [purchase]\n"
        "    where: {total_spend: {gt: 100, lte: 500}, sessions: {eq: 2}}\n"
    )
    journey_map = parse_journey_map(text, "m.yaml")

    assert journey_map.next_stage("a", "purchase", "web", measures(total_spend=200, sessions=2))
    assert not journey_map.next_stage("a", "purchase", "web", measures(total_spend=100, sessions=2))
    assert not journey_map.next_stage("a", "purchase", "web", measures(total_spend=501, sessions=2))
    assert not journey_map.next_stage("a", "purchase", "web", measures(total_spend=200, sessions=1))


def test_next_stage_unlisted_event_type_stays(retail_map: JourneyMap) -> None:
    assert retail_map.next_stage("awareness", "page_view", "web", NONE) is None


# --- malformed maps -----------------------------------------------------------------------


def test_parse_journey_map_valid_text_builds_rules() -> None:
    journey_map = parse_journey_map(SHOP, "shop.yaml")

    assert [rule.to for rule in journey_map.rules] == ["bought", "cart"]
    assert journey_map.rules[1].events == {"add_to_cart", "page_view"}
    assert [(c.metric, c.op, c.value) for c in journey_map.rules[1].where] == [
        ("cart_items", "gte", 1.0)
    ]


def test_parse_journey_map_unknown_stage_in_to_reports_line_and_key() -> None:
    text = SHOP.replace("to: cart", "to: basket")

    message = map_error(text)

    assert "shop.yaml:9: rules[1].to: unknown stage 'basket'" in message


def test_parse_journey_map_unknown_stage_in_from_reports_line_and_key() -> None:
    text = SHOP.replace("    events: [purchase]\n", "    events: [purchase]\n    from: [till]\n")

    message = map_error(text)

    assert "shop.yaml:9: rules[0].from[0]: unknown stage 'till'" in message


def test_parse_journey_map_unknown_event_type_reports_index() -> None:
    text = SHOP.replace("[add_to_cart, page_view]", "[add_to_cart, teleport]")

    message = map_error(text)

    assert "shop.yaml:10: rules[1].events[1]: unknown event type 'teleport'" in message


def test_parse_journey_map_unknown_event_type_in_first_rule_reports_index() -> None:
    text = SHOP.replace("[purchase]", "[purchase, teleport]")

    message = map_error(text)

    assert "shop.yaml:8: rules[0].events[1]: unknown event type 'teleport'" in message


def test_parse_journey_map_unknown_metric_in_where_reports_metric() -> None:
    text = SHOP.replace("cart_items", "basket_items")

    message = map_error(text)

    assert "shop.yaml:11: rules[1].where.basket_items: unknown metric" in message


def test_parse_journey_map_unknown_operator_in_where_rejected() -> None:
    message = map_error(SHOP.replace("gte: 1", "atleast: 1"))

    assert "shop.yaml:11: rules[1].where.cart_items" in message


def test_parse_journey_map_unknown_top_level_key_reports_key() -> None:
    message = map_error(SHOP + "colour: blue\n")

    assert "shop.yaml:12: colour: Extra inputs are not permitted" in message


def test_parse_journey_map_unknown_rule_key_reports_key() -> None:
    message = map_error(SHOP.replace("    events: [purchase]\n", "    event: [purchase]\n"))

    assert "shop.yaml:8: rules[0].event: Extra inputs are not permitted" in message
    assert "rules[0].events: Field required" in message


def test_parse_journey_map_empty_events_list_reports_key() -> None:
    message = map_error(SHOP.replace("[purchase]", "[]"))

    assert "shop.yaml:8: rules[0].events: List should have at least 1 item" in message


def test_parse_journey_map_single_stage_rejected() -> None:
    message = map_error(SHOP.replace("  - cart\n  - bought\n", ""))

    assert "shop.yaml:3: stages: List should have at least 2 items" in message


def test_parse_journey_map_duplicate_stage_rejected() -> None:
    message = map_error(SHOP.replace("  - bought\n", "  - bought\n  - cart\n"))

    assert "shop.yaml:3: stages: stage names must be unique" in message


def test_parse_journey_map_yaml_syntax_error_reports_line() -> None:
    text = SHOP.replace("  - cart\n", "  - cart: x: y\n")

    message = map_error(text)

    assert message.startswith("shop.yaml:4: not valid YAML: ")
    assert "mapping values are not allowed here" in message


def test_parse_journey_map_duplicate_key_reports_second_key_line() -> None:
    text = SHOP.replace("    where:", "    to: browse\n    where:")

    message = map_error(text)

    assert message == "shop.yaml:11: duplicate key 'to'"


def test_parse_journey_map_duplicate_top_level_key_reports_second_key_line() -> None:
    message = map_error(SHOP + "name: other\n")

    assert message == "shop.yaml:12: duplicate key 'name'"


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here\n"])
def test_parse_journey_map_empty_document_rejected(text: str) -> None:
    assert map_error(text) == "shop.yaml: the journey map is empty"


def test_parse_journey_map_custom_type_duplicating_canonical_rejected() -> None:
    text = SHOP.replace("rules:\n", "event_types: [demo_request, purchase]\nrules:\n")

    message = map_error(text)

    assert "shop.yaml:6: event_types[1]: 'purchase' is already a canonical type" in message


def test_parse_journey_map_custom_type_usable_in_rules() -> None:
    text = SHOP.replace("rules:\n", "event_types: [demo_request]\nrules:\n").replace(
        "[purchase]", "[purchase, demo_request]"
    )

    journey_map = parse_journey_map(text, "shop.yaml")

    assert "demo_request" in journey_map.event_types
    assert journey_map.next_stage("browse", "demo_request", "web", NONE) == "bought"


@pytest.mark.parametrize("text", ["- browse\n- cart\n", "just words\n", "42\n"])
def test_parse_journey_map_non_mapping_top_level_rejected(text: str) -> None:
    message = map_error(text)

    assert "shop.yaml:1: (top level): Input should be a valid dictionary" in message


def test_parse_journey_map_reports_every_problem() -> None:
    text = SHOP.replace("to: cart", "to: basket").replace("cart_items", "basket_items")

    lines = map_error(text).splitlines()

    assert lines[0] == "invalid journey map"
    assert [line.strip().split(": ")[1] for line in lines[1:]] == [
        "rules[1].to",
        "rules[1].where.basket_items",
    ]


def test_metrics_keys_equal_fold_measures() -> None:
    assert set(METRICS) == set(_MEASURES)


def test_load_journey_map_non_utf8_file_raises_journey_map_error(tmp_path: Path) -> None:
    # A map saved as Latin-1 is a file that cannot be used: it must be reported as a
    # JourneyMapError naming the path, like an unreadable file, not escape as a raw
    # UnicodeDecodeError.
    path = tmp_path / "shop.yaml"
    path.write_bytes(
        SHOP.replace("name: shop", "name: shop\ndescription: caf\xe9").encode("latin-1")
    )

    with pytest.raises(JourneyMapError) as info:
        load_journey_map(path)

    assert str(path) in str(info.value)


# --- next best actions ---------------------------------------------------------------------

ACTIONS = """
actions:
  - stage: cart
    action: free_shipping
    params: {min_value: 50}
  - stage: cart
    next: exit
    action: discount_code
  - stage: browse
    action: guides
"""


def test_action_for_prefers_the_entry_for_the_predicted_next_stage() -> None:
    journey_map = parse_journey_map(SHOP + ACTIONS, "shop.yaml")

    leaving = journey_map.action_for("cart", "exit")
    fallback = journey_map.action_for("cart", "bought")
    assert leaving is not None
    assert leaving.action == "discount_code"
    assert fallback is not None
    assert fallback.action == "free_shipping"
    assert dict(fallback.params) == {"min_value": 50}
    assert journey_map.action_for("cart", None) == fallback
    assert journey_map.action_for("bought", None) is None


@pytest.mark.parametrize("name", ["retail", "b2b"])
def test_builtin_maps_declare_an_action_for_every_stage(name: str) -> None:
    journey_map = load_journey_map(name)

    assert all(journey_map.action_for(stage, None) for stage in journey_map.stages)


def test_parse_journey_map_action_for_unknown_stage_reports_line_and_key() -> None:
    message = map_error(SHOP + ACTIONS.replace("stage: browse", "stage: basket"))

    assert "shop.yaml:20: actions[2].stage: unknown stage 'basket'" in message


def test_parse_journey_map_action_next_may_be_exit_but_not_unknown() -> None:
    message = map_error(SHOP + ACTIONS.replace("next: exit", "next: gone"))

    assert "actions[1].next: unknown stage 'gone'" in message
    assert "or 'exit'" in message


def test_parse_journey_map_duplicate_action_for_a_stage_rejected() -> None:
    message = map_error(SHOP + ACTIONS.replace("stage: browse", "stage: cart"))

    assert "actions[2]: another action is declared for this stage and next stage" in message


def test_parse_journey_map_exit_is_a_reserved_stage_name() -> None:
    message = map_error(SHOP.replace("  - bought\n", "  - bought\n  - exit\n"))

    assert "stages: 'exit' is reserved" in message


def test_builtin_retail_map_caps_abandoned_carts_to_one_a_day(retail_map: JourneyMap) -> None:
    assert retail_map.trigger_caps["cart.abandoned"] == 24 * 3_600_000
    assert retail_map.quiet_hours is not None
    assert (retail_map.quiet_hours.start_minute, retail_map.quiet_hours.end_minute) == (1260, 480)


def test_parse_journey_map_unknown_trigger_type_in_caps_reports_key() -> None:
    message = map_error(SHOP + "triggers:\n  caps:\n    cart.exploded: {every_hours: 1}\n")

    assert "triggers.caps.cart.exploded" in message


def test_parse_journey_map_unknown_quiet_hours_zone_reports_key() -> None:
    text = SHOP + 'triggers:\n  quiet_hours: {start: "22:00", end: "07:00", timezone: Mars/Base}\n'

    message = map_error(text)

    assert "triggers.quiet_hours.timezone: unknown time zone 'Mars/Base'" in message


def test_quiet_hours_end_across_midnight_in_their_time_zone() -> None:
    from datetime import datetime

    from models.journeymap import QuietHours

    paris = QuietHours(21 * 60, 8 * 60, "Europe/Paris")  # 21:00-08:00 local
    at = lambda text: datetime.fromisoformat(text).timestamp()  # noqa: E731

    # 22:30 in Paris (UTC+1 in winter) is inside; it ends at 08:00 the next morning
    assert paris.ends_at(at("2026-11-30T21:30:00+00:00")) == at("2026-12-01T07:00:00+00:00")
    # 06:59 local is inside, ending the same morning; 08:00 local is outside
    assert paris.ends_at(at("2026-12-01T05:59:00+00:00")) == at("2026-12-01T07:00:00+00:00")
    assert paris.ends_at(at("2026-12-01T07:00:00+00:00")) is None
    day = QuietHours(12 * 60, 13 * 60, "UTC")  # a lunch break, not spanning midnight
    assert day.ends_at(at("2026-12-01T12:15:00+00:00")) == at("2026-12-01T13:00:00+00:00")
    assert day.ends_at(at("2026-12-01T13:15:00+00:00")) is None


@pytest.mark.parametrize("text", ["!0", "name: !!python/object:os.system x\n"])
def test_a_yaml_tag_safe_loading_refuses_is_a_map_error_naming_file_and_line(text: str) -> None:
    with pytest.raises(JourneyMapError, match=r"^shop\.yaml:1: not valid YAML"):
        parse_journey_map(text, "shop.yaml")
