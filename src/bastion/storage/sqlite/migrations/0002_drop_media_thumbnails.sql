-- Thumbnails are generated once per configured size and found by their file name beside the
-- media (services/media.py): the table that indexed the thumbnails of any requested size is no
-- longer read or written. Its files stay where they are; they are a cache, and each size is
-- generated again, in the new file layout, on its first request.
DROP TABLE IF EXISTS media_thumbnails;
