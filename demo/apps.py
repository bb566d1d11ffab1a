from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Sample vendors, sample workflows and demo history.

    Installed by `scripts/demo` and the tests (`BOSUN_DEMO=1`), never by a
    production deployment: its fake vendor tools are registered only while
    this app is installed, so an operator cannot pick them otherwise.
    """

    name = "demo"
    verbose_name = "Demo"
    # Added to the tool registry (`runs.tools.base`) while installed.
    bosun_tools = {
        "enrich.company": "demo.vendors.EnrichCompany",
        "outreach.send": "demo.vendors.OutreachSend",
        "ticket.get": "demo.vendors.TicketGet",
        "invoice.lookup": "demo.vendors.InvoiceLookup",
        "refund.create_request": "demo.vendors.RefundCreateRequest",
    }
