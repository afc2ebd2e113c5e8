"""Portal pages for the mapping screens, approvals and sync (filled in by the portal work)."""


class MappingPages:
    pass
