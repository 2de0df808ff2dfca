"""The business owner's threshold, in a real browser: an administrator moves the $500 threshold to $800 at the owner's
request, and the owner (not the editor: four eyes) reads what it means and signs it off; the rule applies again."""

from decimal import Decimal

import pytest

from governance.choices import BandMode
from governance.models import ThresholdRule
from tests.browser import SCREEN, Journey
from tests.factories import propose_raise

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RULE = "Credit limit changes on crm"


def test_the_admin_moves_the_500_threshold_to_800_and_the_owner_signs_it_off_so_a_700_raise_runs_alone(live, sign_in):
    # The administrator, from the home page: the rules, the rule, one number, the reason, Save.
    page = sign_in("admin", viewport=SCREEN)
    admin = Journey(page)
    admin.click(page.locator("#dash-rules").get_by_role("link", name="All threshold rules"))
    admin.click(page.get_by_role("link", name=RULE, exact=True))
    assert page.input_value("#id_bands-1-sla") == "4 hours"  # durations in words
    assert page.locator("#bands-0 fieldset.band-decides").is_hidden()  # an auto band: nobody approves it
    page.fill("#id_bands-0-max_amount", "800")
    assert (
        page.locator("#bands-1 .fieldBox.field-lower_bound").inner_text().endswith("800.00")
    )  # band 2 follows at once
    page.fill("#id_configuration_reason", "Olivia asked for it: raises under $800 need nobody's approval.")
    admin.click("input[name=_save]")
    warning = page.locator(".messagelist .warning").inner_text()
    assert "every proposal under it now waits for a person until someone other than you signs it off" in warning
    assert "Olivia Owner, the business owner of crm" in warning

    # The owner, from her home page: the rule waiting for her, Sign off, read, confirm.
    page = sign_in("owner", viewport=SCREEN)
    owner = Journey(page)
    waiting = page.locator("#dash-rules")
    assert "edited since it was signed off: void" in waiting.locator("tr", has_text=RULE).inner_text()
    owner.click(waiting.get_by_role("link", name=RULE))
    owner.click("#sign-off-button")
    bands = page.locator("#sign-off-bands").inner_text()
    assert "Under 800.00 USD: runs at once without a person" in bands
    assert "800.00 to under 5,000.00 USD: Dana Approver approves it within 4 hours before it runs" in bands
    assert "raises under $800 need nobody's approval" in page.locator("#sign-off-last-change").inner_text()
    assert "the same record in the last 24 h count" in page.locator("#sign-off-terms").inner_text()
    owner.screenshot("owner")
    owner.click("#confirm-sign-off")
    assert "You signed off" in page.locator(".messagelist .success").inner_text()
    assert page.locator("#sign-off-state").inner_text().startswith("In force: signed off by Olivia Owner")

    print(f"clicks: admin {admin.clicks}, owner {owner.clicks}, together {admin.clicks + owner.clicks}")
    assert (admin.clicks, owner.clicks) == (3, 3)
    assert admin.clicks + owner.clicks <= 6
    rule = ThresholdRule.objects.prefetch_related("bands").get(name=RULE)
    assert [(band.min_amount, band.max_amount, band.mode) for band in rule.bands.all()][:2] == [
        (Decimal(0), Decimal(800), BandMode.AUTO),
        (Decimal(800), Decimal(5000), BandMode.SINGLE),
    ]
    assert rule.is_signed_off

    # The rule applies again: a $700 raise on 4471 (2,000 → 2,700) runs without anyone.
    proposal_id = propose_raise(live, "2700.00")
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "2700.00"
