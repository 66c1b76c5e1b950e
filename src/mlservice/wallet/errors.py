from mlservice.errors import AppError


class InsufficientCredits(AppError):
    status_code = 402
    code = "insufficient_credits"


class HoldAlreadyResolved(AppError):
    status_code = 409
    code = "hold_already_resolved"
