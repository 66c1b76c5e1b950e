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


class RefillLimitExceeded(AppError):
    """More credits in one top-up than the server allows (``max_refill_amount``)."""

    status_code = 422
    code = "refill_limit_exceeded"


class InvalidTopUpAmount(AppError):
    """A top-up of no credits or fewer: every surface refuses it before, the use case once more,
    since a negative top-up would be a debit no one authorised."""

    status_code = 422
    code = "invalid_top_up_amount"


class GrantNotFound(AppError):
    status_code = 404
    code = "grant_not_found"


class GrantNotVoidable(AppError):
    """Only a grant none of which was spent or is held can be voided: voiding takes it all back."""

    status_code = 409
    code = "grant_not_voidable"


class PromoCodeNotFound(AppError):
    status_code = 404
    code = "promo_code_not_found"


class PromoCodeUnavailable(AppError):
    """The code expired or all its uses are taken."""

    status_code = 409
    code = "promo_code_unavailable"


class PromoCodeAlreadyRedeemed(AppError):
    status_code = 409
    code = "promo_code_already_redeemed"


class PromoCodeTaken(AppError):
    status_code = 409
    code = "promo_code_taken"


class JobNotRefundable(AppError):
    """Only a job whose charge was captured, and not refunded yet, can be refunded."""

    status_code = 409
    code = "not_refundable"
