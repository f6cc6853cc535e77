<?php

// A minimal Symfony app for the bridge's tests, on the Symfony 5.4 Debian packages (no Composer
// registry here): what Composer's autoloader would give it, by hand. The framework's autoloaders,
// the asyncphp library's, and the app's own classes (App\ in src/).
require_once '/usr/share/php/Symfony/Bundle/FrameworkBundle/autoload.php';
require_once '/usr/share/php/Symfony/Component/Messenger/autoload.php';
require_once dirname(__DIR__, 3) . '/php/autoload.php';
spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'App\\')) {
        $file = dirname(__DIR__) . '/src/' . str_replace('\\', '/', substr($class, 4)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
