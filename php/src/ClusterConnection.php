<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * A Connection to a Redis Cluster. The client refuses, on one, a stream without a hash tag: its
 * keys (:dead, :delayed…, :unique:…) and scripts must share its slot, and the daemon refuses to
 * read such a stream (docs/cluster.md). A marker: it adds no command.
 */
interface ClusterConnection extends Connection
{
}
