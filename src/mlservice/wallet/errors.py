from mlservice.errors import AppError


class InsufficientCredits(AppError):
    status_code = 402
    code = "insufficient_credits"


class HoldAlreadyResolved(AppError):
    status_code = 409
    code = "hold_already_resolved"


class AdjustmentExceedsAvailable(AppError):
    """A negative adjustment larger than what the user could spend (balance less open holds)."""

    status_code = 409
    code = "adjustment_exceeds_available"
