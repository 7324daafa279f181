"""Topic-based subscriptions (Subscriptions R5 Backport IG, STU 1.1, on R4).

Why a package of its own: the write path only asks it which topics a write fires (`events`),
the dispatcher only asks it how to build and address notifications; topics, matching, the
Subscription model and the notification Bundles are plain functions both sides share.
"""
