autossh -M 0 -oProxyCommand=nc\ %h\ %p host.example.org
autossh -M 0 -L 1:a:2 host.example.org; rm -rf /
autossh -M 0 -L $(cat /etc/passwd):a:2 host
autossh -M 0 -L `id`:a:2 host
autossh -M 0 -L 5001:a:2 host | tee /tmp/log
autossh -M 0 -L 5002:a:2 host > /tmp/log
bash -c "autossh -M 0 -L 5003:a:2 host"
autossh -M 0 -L 5004:a:2 -- -oProxyCommand=x
autossh -M 0 -L 5005:a:2 -l -oProxyCommand=x host
autossh -M 0 -o "LocalCommand touch /tmp/x" host
autossh -M 0 "-L 5006:a:2 -oProxyCommand=x" host
autossh -M 0 -L "5007:a:2" host "echo \$HOME"
autossh -M 0 -J "-oProxyCommand=x" host
autossh -M 0 -L 5008:a:2 host && reboot
autossh -M 0 -i "/tmp/x
y" host
