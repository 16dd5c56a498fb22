from configparser import ConfigParser
import setuptools, shlex
# nbdev's template asserted setuptools>=36.2 through pkg_resources, which setuptools 81+ no longer ships

# note: all settings are in settings.ini; edit there, not here
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o:cfg[o] for o in cfg_keys}

licenses = {  # settings.ini's name -> (SPDX expression, the older trove classifier)
    'apache2': ('Apache-2.0', 'OSI Approved :: Apache Software License'),
    'mit': ('MIT', 'OSI Approved :: MIT License'),
    'gpl2': ('GPL-2.0-only', 'OSI Approved :: GNU General Public License v2 (GPLv2)'),
    'gpl3': ('GPL-3.0-only', 'OSI Approved :: GNU General Public License v3 (GPLv3)'),
    'bsd3': ('BSD-3-Clause', 'OSI Approved :: BSD License'),
}
statuses = [ '1 - Planning', '2 - Pre-Alpha', '3 - Alpha',
    '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive' ]
status = next(s for s in statuses if s.startswith(cfg['status'] + ' '))  # `status = 3` is Alpha (nbdev's template read it as Beta)
py_versions = '3.10 3.11 3.12 3.13'.split()

requirements = shlex.split(cfg.get('requirements', ''))
if cfg.get('pip_requirements'): requirements += shlex.split(cfg.get('pip_requirements', ''))
min_python = cfg['min_python']
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))
# setuptools 77+ takes an SPDX expression and refuses a license classifier beside it; older ones take the classifier
spdx = int(setuptools.__version__.split('.')[0]) >= 77
license_kw = dict(license_expression=lic[0], license_files=['LICENSE']) if spdx else dict(license=lic[0])
# optional extras: each `NAME_requirements` in settings.ini is `pip install d2i_lit[NAME]`; `[dev]` adds every one of them
not_extras = {'requirements', 'pip_requirements', 'conda_requirements', 'dev_requirements'}
extras = {k[:-len('_requirements')]: shlex.split(v) for k, v in cfg.items() if k.endswith('_requirements') and k not in not_extras}
dev_requirements = shlex.split(cfg.get('dev_requirements') or '') + [r for reqs in extras.values() for r in reqs]

package_data = dict()
pkg_data = cfg.get('package_data', None)
if pkg_data:
    package_data[cfg['lib_name']] =  pkg_data.split() # split as multiple files might be listed
# Add package data to setup_cfg for setuptools.setup(..., **setup_cfg)
setup_cfg['package_data'] = package_data
# a data folder such as `assets/` is an importable namespace package to Python: name it, or setuptools warns it would skip it
data_pkgs = sorted({cfg['lib_name'] + '.' + p.split('/')[0] for p in (pkg_data or '').split() if '/' in p})

setuptools.setup(
    name = cfg['lib_name'],
    **license_kw,
    classifiers = [
        'Development Status :: ' + status,
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
    ] + ['Programming Language :: Python :: '+o for o in py_versions[py_versions.index(min_python):]] + (['License :: ' + lic[1]] if lic[1] and not spdx else []),
    url = cfg['git_url'],
    packages = setuptools.find_packages() + data_pkgs,
    include_package_data = True,
    install_requires = requirements,
    extras_require={**extras, 'dev': dev_requirements},
    dependency_links = cfg.get('dep_links','').split(),
    python_requires  = '>=' + cfg['min_python'],
    long_description = open('README.md', encoding='utf-8').read(),
    long_description_content_type = 'text/markdown',
    zip_safe = False,
    entry_points = {
        'console_scripts': cfg.get('console_scripts','').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']
    },
    **setup_cfg)
