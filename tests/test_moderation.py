"""Which new jokes wait for a moderator (`MODERATION`, flagged text, where a joke comes from)."""

import pytest

from bot.community.moderation import initial_status


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"mode": "off", "source": "user"}, "approved"),
        ({"mode": "off", "source": "user", "flagged": True}, "pending"),
        ({"mode": "all", "source": "user", "author_is_admin": True}, "pending"),
        ({"mode": "all", "source": "community"}, "pending"),
        ({"mode": "new", "source": "user", "approved_by_author": 2}, "pending"),
        ({"mode": "new", "source": "user", "approved_by_author": 3}, "approved"),
        ({"mode": "new", "source": "user", "author_is_admin": True}, "approved"),
        ({"mode": "new", "source": "community"}, "approved"),
        ({"mode": "all", "source": "import"}, "approved"),
        ({"mode": "all", "source": "starter"}, "approved"),
        ({"mode": "off", "source": "import", "flagged": True}, "pending"),
    ],
)
def test_moderation_decision(kw, expected):
    assert initial_status(new_member_jokes=3, **kw) == expected
