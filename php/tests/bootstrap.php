<?php

declare(strict_types=1);

require __DIR__ . '/../autoload.php';
// Predis from Debian's php-nrk-predis, where the test command installs it.
if (is_file('/usr/share/php/Predis/Autoloader.php')) {
    require_once '/usr/share/php/Predis/Autoloader.php';
    Predis\Autoloader::register();
}
